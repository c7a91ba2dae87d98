//! Header-map imports: `proxy_{get,set}_header_map_pairs`, `proxy_*_header_map_value`.

use wasmtime::{Caller, Linker};

use super::{give, lower, read, st};
use crate::abi::{self, decode_map, Status};
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>,
         map: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            let bytes = abi::encode_map(m);
            st(give(&mut c, &bytes, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes = tri!(read(&mut c, ptr, len));
            let Some(pairs) = decode_map(&bytes) else {
                return st(Status::SerializationFailure);
            };
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            *m = pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            let Some(v) = m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
                return st(Status::NotFound);
            };
            st(give(&mut c, &v, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let value = tri!(read(&mut c, vp, vl));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            match m.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    m[i].1 = value;
                    let mut seen = false;
                    m.retain(|(k, _)| {
                        if *k == key {
                            !std::mem::replace(&mut seen, true)
                        } else {
                            true
                        }
                    });
                }
                None => m.push((key, value)),
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            m.retain(|(k, _)| *k != key);
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            let key = lower(&tri!(read(&mut c, kp, kl)));
            let value = tri!(read(&mut c, vp, vl));
            let Some(m) = c.data_mut().map(map) else {
                return st(Status::BadArgument);
            };
            m.push((key, value));
            st(Status::Ok)
        },
    )?;
    Ok(())
}

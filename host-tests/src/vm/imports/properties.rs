//! Imports `proxy_get_property` and `proxy_set_property` (per stream, else per VM).

use wasmtime::{Caller, Linker};

use super::{give, read, st};
use crate::abi::{property_key, Status};
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmState>,
         pp: i32,
         pl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let key = property_key(&tri!(read(&mut c, pp, pl)));
            let s = c.data_mut();
            let value = s
                .stream()
                .and_then(|st| st.properties.get(&key).cloned())
                .or_else(|| s.properties.get(&key).cloned());
            let Some(v) = value else {
                return st(Status::NotFound);
            };
            st(give(&mut c, &v, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, VmState>, pp: i32, pl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let key = property_key(&tri!(read(&mut c, pp, pl)));
            let value = tri!(read(&mut c, vp, vl));
            let s = c.data_mut();
            match s.stream() {
                Some(st) => st.properties.insert(key, value),
                None => s.properties.insert(key, value),
            };
            st(Status::Ok)
        },
    )?;
    Ok(())
}

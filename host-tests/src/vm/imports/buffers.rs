//! Imports `proxy_get_buffer_bytes` and `proxy_set_buffer_bytes` (bodies, call reply, configs).

use wasmtime::{Caller, Linker};

use super::{give, read, st};
use crate::abi::{buffer_type, Status};
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(b) = c.data_mut().buffer(buf) else {
                return st(Status::NotFound);
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start > b.len() {
                return st(Status::BadArgument);
            }
            let end = start.saturating_add(max).min(b.len());
            let bytes = b[start..end].to_vec();
            if bytes.is_empty() {
                // Envoy answers NotFound for an empty body; the SDK turns that into None.
                return st(Status::NotFound);
            }
            st(give(&mut c, &bytes, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         buf: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let data = tri!(read(&mut c, ptr, len));
            if buf == buffer_type::VM_CONFIGURATION || buf == buffer_type::PLUGIN_CONFIGURATION {
                return st(Status::BadArgument);
            }
            let Some(b) = c.data_mut().buffer(buf) else {
                return st(Status::NotFound);
            };
            let start = (start as u32 as usize).min(b.len());
            let end = start.saturating_add(size as u32 as usize).min(b.len());
            b.splice(start..end, data);
            st(Status::Ok)
        },
    )?;
    Ok(())
}

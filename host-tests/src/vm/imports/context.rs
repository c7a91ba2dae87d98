//! Imports `proxy_set_effective_context`, `proxy_call_foreign_function` (stub) and `proxy_done`.

use wasmtime::{Caller, Linker};

use super::st;
use crate::abi::Status;
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, VmState>, ctx: i32| -> wasmtime::Result<i32> {
            let ctx = ctx as u32;
            let s = c.data_mut();
            if ctx != s.root_context && !s.streams.contains_key(&ctx) {
                return st(Status::BadArgument);
            }
            s.effective = ctx;
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_done",
        |_c: Caller<'_, VmState>| -> wasmtime::Result<i32> { st(Status::Ok) },
    )?;
    Ok(())
}

//! Imports `proxy_grpc_{stream,call,send,cancel,close}` (stubs) and `proxy_get_status`.

use wasmtime::{Caller, Linker};

use super::{give, st, write};
use crate::abi::Status;
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    // Pag0 uses no gRPC; a guest that does gets a clear status rather than a missing import.
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::Unimplemented) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { st(Status::Unimplemented) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            st(Status::Unimplemented)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { st(Status::NotFound) },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, VmState>, code: i32, mp: i32, ml: i32| -> wasmtime::Result<i32> {
            tri!(write(&mut c, code, &0u32.to_le_bytes()));
            st(give(&mut c, b"", mp, ml)?)
        },
    )?;
    Ok(())
}

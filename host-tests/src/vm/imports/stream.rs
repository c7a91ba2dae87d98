//! Imports `proxy_continue_stream`, `proxy_close_stream` and `proxy_send_local_response`.

use wasmtime::{Caller, Linker};

use super::{read, st};
use crate::abi::{self, decode_map, Status};
use crate::vm::{LocalReply, VmState};

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, VmState>, stream: i32| -> wasmtime::Result<i32> {
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            match stream {
                abi::stream_type::REQUEST => s.resumed_request = true,
                abi::stream_type::RESPONSE => s.resumed_response = true,
                _ => return st(Status::BadArgument),
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Caller<'_, VmState>, _stream: i32| -> wasmtime::Result<i32> {
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            s.closed = true;
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            let details = String::from_utf8_lossy(&tri!(read(&mut c, dp, dl))).into_owned();
            let body = tri!(read(&mut c, bp, bl));
            let Some(headers) = decode_map(&tri!(read(&mut c, hp, hl))) else {
                return st(Status::SerializationFailure);
            };
            let Some(s) = c.data_mut().stream() else {
                return st(Status::NotFound);
            };
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            s.local_replies.push(LocalReply {
                status: status as u32,
                details,
                headers,
                body,
            });
            st(Status::Ok)
        },
    )?;
    Ok(())
}

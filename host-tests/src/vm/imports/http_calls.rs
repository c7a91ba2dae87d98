//! Import `proxy_http_call` (the SDK's `dispatch_http_call`), recorded for the host to answer.

use wasmtime::{Caller, Linker};

use super::{read, st, write};
use crate::abi::{decode_map, Status};
use crate::vm::{HttpCall, VmState};

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmState>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let cluster = String::from_utf8_lossy(&tri!(read(&mut c, up, ul))).into_owned();
            let Some(headers) = decode_map(&tri!(read(&mut c, hp, hl))) else {
                return st(Status::SerializationFailure);
            };
            let body = tri!(read(&mut c, bp, bl));
            let Some(trailers) = decode_map(&tri!(read(&mut c, tp, tl))) else {
                return st(Status::SerializationFailure);
            };
            let s = c.data_mut();
            if !s.clusters.contains(&cluster) {
                return st(Status::BadArgument);
            }
            for required in [":method", ":path", ":authority"] {
                if !headers.iter().any(|(k, v)| k == required && !v.is_empty()) {
                    return st(Status::BadArgument);
                }
            }
            s.next_token += 1;
            let token = s.next_token;
            let context = s.effective;
            s.calls.push(HttpCall {
                token,
                context,
                cluster,
                headers,
                body,
                trailers,
                timeout_ms: timeout as u32,
            });
            tri!(write(&mut c, ret, &token.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    Ok(())
}

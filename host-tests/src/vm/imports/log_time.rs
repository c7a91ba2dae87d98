//! Imports `proxy_log`, `proxy_get_log_level`, current time and `proxy_set_tick_period_*`.

use wasmtime::{Caller, Linker};

use super::{read, st, write};
use crate::abi::{LogLevel, Status};
use crate::shared::lock;
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let msg = tri!(read(&mut c, ptr, len));
            let Some(level) = LogLevel::from_i32(level) else {
                return st(Status::BadArgument);
            };
            c.data()
                .log(level, String::from_utf8_lossy(&msg).into_owned());
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, VmState>, ret: i32| -> wasmtime::Result<i32> {
            let level = c.data().log_level as i32;
            tri!(write(&mut c, ret, &level.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, VmState>, ret: i32| -> wasmtime::Result<i32> {
            let now = lock(&c.data().shared).now_nanos;
            tri!(write(&mut c, ret, &now.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, VmState>, period: i32| -> wasmtime::Result<i32> {
            c.data_mut().tick_period_ms = period as u32;
            st(Status::Ok)
        },
    )?;
    Ok(())
}

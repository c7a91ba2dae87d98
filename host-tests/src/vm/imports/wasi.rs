//! The WASI preview-1 imports Envoy gives a proxy-wasm module (`fd_write`, clock, random, ...).

use wasmtime::{format_err, Caller, Linker};

use super::{read, write};
use crate::abi::LogLevel;
use crate::shared::lock;
use crate::vm::VmState;

/// The WASI preview-1 functions Envoy implements for proxy-wasm modules (proxy-wasm-cpp-host
/// `exports.cc`): stdout/stderr go to the log, the clock is the host's, randomness is seeded,
/// and there is no file system. Anything else is a missing import, as in Envoy.
pub(in crate::vm) fn register(l: &mut Linker<VmState>, m: &str) -> wasmtime::Result<()> {
    const ESUCCESS: i32 = 0;
    const EBADF: i32 = 8;
    const ENOSYS: i32 = 52;
    l.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_, VmState>,
         fd: i32,
         iovs: i32,
         n: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(EBADF),
            };
            let Ok(list) = read(&mut c, iovs, n.saturating_mul(8))? else {
                return Ok(21);
            };
            let mut text = Vec::new();
            for iov in list.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Ok(b) = read(&mut c, ptr, len)? else {
                    return Ok(21);
                };
                text.extend_from_slice(&b);
            }
            let Ok(()) = write(&mut c, nwritten, &(text.len() as u32).to_le_bytes())? else {
                return Ok(21);
            };
            let msg = String::from_utf8_lossy(&text)
                .trim_end_matches('\n')
                .to_string();
            c.data().log(level, msg);
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_read",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_seek",
        |_c: Caller<'_, VmState>, _: i32, _: i64, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_close",
        |_c: Caller<'_, VmState>, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Caller<'_, VmState>, fd: i32, buf: i32| -> wasmtime::Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            // filetype character device (2), no flags, rights fd_write only.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8] = 1 << 6;
            let Ok(()) = write(&mut c, buf, &stat)? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "fd_prestat_get",
        |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(EBADF) },
    )?;
    l.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    l.func_wrap(
        m,
        "path_open",
        |_c: Caller<'_, VmState>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i64,
         _: i64,
         _: i32,
         _: i32|
         -> wasmtime::Result<i32> { Ok(ENOSYS) },
    )?;
    for (get, sizes) in [
        ("environ_get", "environ_sizes_get"),
        ("args_get", "args_sizes_get"),
    ] {
        l.func_wrap(
            m,
            get,
            |_c: Caller<'_, VmState>, _: i32, _: i32| -> wasmtime::Result<i32> { Ok(ESUCCESS) },
        )?;
        l.func_wrap(
            m,
            sizes,
            |mut c: Caller<'_, VmState>, count: i32, size: i32| -> wasmtime::Result<i32> {
                let Ok(()) = write(&mut c, count, &0u32.to_le_bytes())? else {
                    return Ok(21);
                };
                let Ok(()) = write(&mut c, size, &0u32.to_le_bytes())? else {
                    return Ok(21);
                };
                Ok(ESUCCESS)
            },
        )?;
    }
    l.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_, VmState>,
         _id: i32,
         _precision: i64,
         ret: i32|
         -> wasmtime::Result<i32> {
            let now = lock(&c.data().shared).now_nanos;
            let Ok(()) = write(&mut c, ret, &now.to_le_bytes())? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "random_get",
        |mut c: Caller<'_, VmState>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            let mut bytes = Vec::with_capacity(len as u32 as usize);
            while bytes.len() < len as u32 as usize {
                bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
            }
            bytes.truncate(len as u32 as usize);
            let Ok(()) = write(&mut c, buf, &bytes)? else {
                return Ok(21);
            };
            Ok(ESUCCESS)
        },
    )?;
    l.func_wrap(
        m,
        "proc_exit",
        |_c: Caller<'_, VmState>, code: i32| -> wasmtime::Result<()> {
            Err(format_err!("the guest called proc_exit({code})"))
        },
    )?;
    l.func_wrap(
        m,
        "sched_yield",
        |_c: Caller<'_, VmState>| -> wasmtime::Result<i32> { Ok(ESUCCESS) },
    )?;
    l.func_wrap(
        m,
        "poll_oneoff",
        |_c: Caller<'_, VmState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            Ok(ENOSYS)
        },
    )?;
    Ok(())
}

//! The proxy-wasm `env` imports (one file per family), WASI, and their guest-memory helpers.

use wasmtime::{format_err, Caller, Extern, Linker, Memory};

use super::VmState;
use crate::abi::Status;

// === guest memory ===

fn memory(caller: &mut Caller<'_, VmState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| format_err!("the guest exports no memory"))
}

fn read(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Result<Vec<u8>, Status>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    Ok(match mem.data(&*caller).get(ptr..ptr.saturating_add(len)) {
        Some(b) => Ok(b.to_vec()),
        None => Err(Status::InvalidMemoryAccess),
    })
}

fn write(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<Result<(), Status>> {
    let mem = memory(caller)?;
    let ptr = ptr as u32 as usize;
    Ok(
        match mem
            .data_mut(&mut *caller)
            .get_mut(ptr..ptr.saturating_add(bytes.len()))
        {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(Status::InvalidMemoryAccess),
        },
    )
}

/// Copy `bytes` into memory the guest allocates (`proxy_on_memory_allocate`, else `malloc`) and
/// store the pointer and size at `ptr_ptr` / `len_ptr`, as Envoy does for every returned buffer.
fn give(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ptr_ptr: i32,
    len_ptr: i32,
) -> wasmtime::Result<Status> {
    let alloc = caller
        .get_export("proxy_on_memory_allocate")
        .or_else(|| caller.get_export("malloc"))
        .and_then(Extern::into_func)
        .ok_or_else(|| {
            format_err!("the guest exports neither proxy_on_memory_allocate nor malloc")
        })?;
    let addr = alloc
        .typed::<i32, i32>(&*caller)?
        .call(&mut *caller, bytes.len() as i32)?;
    if addr == 0 && !bytes.is_empty() {
        return Ok(Status::InvalidMemoryAccess);
    }
    for r in [
        write(caller, addr, bytes)?,
        write(caller, ptr_ptr, &addr.to_le_bytes())?,
        write(caller, len_ptr, &(bytes.len() as u32).to_le_bytes())?,
    ] {
        if let Err(s) = r {
            return Ok(s);
        }
    }
    Ok(Status::Ok)
}

fn st(s: Status) -> wasmtime::Result<i32> {
    Ok(s as i32)
}

macro_rules! tri {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(s) => return Ok(s as i32),
        }
    };
}

fn lower(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

// `tri!` above is in scope in these modules: they are declared after it.
mod buffers;
mod context;
mod grpc;
mod headers;
mod http_calls;
mod log_time;
mod metrics;
mod properties;
mod shared_data;
mod stream;
mod wasi;

pub(super) use wasi::register as wasi;

/// The proxy-wasm ABI 0.2.1 imports (module `env`), family by family.
pub(super) fn env(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    log_time::register(l)?;
    buffers::register(l)?;
    headers::register(l)?;
    properties::register(l)?;
    shared_data::register(l)?;
    stream::register(l)?;
    http_calls::register(l)?;
    grpc::register(l)?;
    context::register(l)?;
    metrics::register(l)?;
    Ok(())
}

//! Shared-data and shared-queue imports: `proxy_{get,set}_shared_data`, `proxy_*_shared_queue`.

use wasmtime::{Caller, Linker};

use super::{give, read, st, write};
use crate::abi::Status;
use crate::shared::lock;
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8_lossy(&tri!(read(&mut c, kp, kl))).into_owned();
            let found = lock(&c.data().shared).get_data(&c.data().vm_id, &key);
            let Some((value, cas)) = found else {
                return st(Status::NotFound);
            };
            tri!(write(&mut c, ret_cas, &cas.to_le_bytes()));
            st(give(&mut c, &value, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         cas: i32|
         -> wasmtime::Result<i32> {
            let key = String::from_utf8_lossy(&tri!(read(&mut c, kp, kl))).into_owned();
            let value = tri!(read(&mut c, vp, vl));
            let vm_id = c.data().vm_id.clone();
            let status = lock(&c.data().shared).set_data(&vm_id, &key, value, cas as u32);
            st(status)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, VmState>, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let (vm_id, vm, ctx) = (c.data().vm_id.clone(), c.data().index, c.data().effective);
            let id = lock(&c.data().shared).register_queue(&vm_id, &name, vm, ctx);
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, VmState>,
         vp: i32,
         vl: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let vm_id = String::from_utf8_lossy(&tri!(read(&mut c, vp, vl))).into_owned();
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let Some(id) = lock(&c.data().shared).resolve_queue(&vm_id, &name) else {
                return st(Status::NotFound);
            };
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, VmState>,
         id: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let item = {
                let mut sh = lock(&c.data().shared);
                let Some(q) = sh.queue_mut(id as u32) else {
                    return st(Status::NotFound);
                };
                q.items.pop_front()
            };
            let Some(item) = item else {
                return st(Status::Empty);
            };
            st(give(&mut c, &item, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let value = tri!(read(&mut c, vp, vl));
            let mut sh = lock(&c.data().shared);
            let Some(q) = sh.queue_mut(id as u32) else {
                return st(Status::NotFound);
            };
            q.items.push_back(value);
            sh.ready_queues.push_back(id as u32);
            st(Status::Ok)
        },
    )?;
    Ok(())
}

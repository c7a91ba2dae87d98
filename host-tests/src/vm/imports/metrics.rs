//! Metric imports: `proxy_define_metric`, `proxy_{get,record,increment}_metric`.

use wasmtime::{Caller, Linker};

use super::{read, st, write};
use crate::abi::{metric_type, Status};
use crate::shared::{lock, MetricKind};
use crate::vm::VmState;

pub(super) fn register(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>,
         kind: i32,
         np: i32,
         nl: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let name = String::from_utf8_lossy(&tri!(read(&mut c, np, nl))).into_owned();
            let kind = match kind {
                metric_type::COUNTER => MetricKind::Counter,
                metric_type::GAUGE => MetricKind::Gauge,
                metric_type::HISTOGRAM => MetricKind::Histogram,
                _ => return st(Status::BadArgument),
            };
            let id = lock(&c.data().shared).define_metric(kind, &name);
            tri!(write(&mut c, ret, &id.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, VmState>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            let v = {
                let mut sh = lock(&c.data().shared);
                let Some(m) = sh.metric_mut(id as u32) else {
                    return st(Status::NotFound);
                };
                if m.kind == MetricKind::Histogram {
                    return st(Status::BadArgument);
                }
                m.value as u64
            };
            tri!(write(&mut c, ret, &v.to_le_bytes()));
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, VmState>, id: i32, value: i64| -> wasmtime::Result<i32> {
            let mut sh = lock(&c.data().shared);
            let Some(m) = sh.metric_mut(id as u32) else {
                return st(Status::NotFound);
            };
            match m.kind {
                MetricKind::Counter => m.value = m.value.saturating_add(value),
                MetricKind::Gauge => m.value = value,
                MetricKind::Histogram => {
                    m.samples.push(value as u64);
                    m.value = m.value.saturating_add(value);
                }
            }
            st(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, VmState>, id: i32, offset: i64| -> wasmtime::Result<i32> {
            let mut sh = lock(&c.data().shared);
            let Some(m) = sh.metric_mut(id as u32) else {
                return st(Status::NotFound);
            };
            match m.kind {
                MetricKind::Counter if offset < 0 => return st(Status::BadArgument),
                MetricKind::Histogram => return st(Status::BadArgument),
                _ => m.value = m.value.saturating_add(offset),
            }
            st(Status::Ok)
        },
    )?;
    Ok(())
}

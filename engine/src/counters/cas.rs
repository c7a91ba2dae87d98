//! One read-modify-write of a shared-data key by compare-and-swap, for every such update in
//! the engine: read the value and its CAS token, let `f` decide, write conditionally, and on
//! `CasMismatch` (another worker wrote since the read) read again and retry, unbounded (each
//! mismatch means someone else's write landed: progress overall).

use super::{create, HostError, SetError, SharedStore};

/// What `f` of [`cas_update`] makes of the current value.
pub enum Update<V, T> {
    /// Write `V` conditionally on the read; hand back `T` once it lands.
    Set(V, T),
    /// Write nothing; hand back `T`.
    Keep(T),
    /// The key is absent: create it holding `V` (exactly once, [`create::create`]), read again.
    Create(V),
    /// Read again (without writing).
    Retry,
}

/// Read-modify-write of `key` by CAS. `f` gets the current value (`None`: absent, or empty)
/// and its CAS token (`None`: absent); a host error from a read, a create or a write is
/// returned as is.
pub fn cas_update<S, V, T>(
    store: &S,
    key: &str,
    f: impl FnMut(Option<&[u8]>, Option<u32>) -> Update<V, T>,
) -> Result<T, HostError>
where
    S: SharedStore + ?Sized,
    V: AsRef<[u8]>,
{
    cas_update_from(store, key, None, f)
}

/// [`cas_update`] whose first attempt uses `first`, a read of `key` made earlier (if anyone
/// wrote in between, its CAS fails and the next attempt reads afresh).
#[allow(clippy::type_complexity)]
pub fn cas_update_from<S, V, T>(
    store: &S,
    key: &str,
    mut first: Option<(Option<Vec<u8>>, Option<u32>)>,
    mut f: impl FnMut(Option<&[u8]>, Option<u32>) -> Update<V, T>,
) -> Result<T, HostError>
where
    S: SharedStore + ?Sized,
    V: AsRef<[u8]>,
{
    loop {
        let (value, cas) = match first.take() {
            Some(read) => read,
            None => store.get(key)?,
        };
        match f(value.as_deref(), cas) {
            Update::Keep(out) => return Ok(out),
            Update::Retry => continue,
            Update::Create(initial) => {
                create::create(store, key, initial.as_ref())?;
                continue;
            }
            Update::Set(next, out) => match store.set(key, next.as_ref(), cas) {
                Ok(()) => return Ok(out),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(h)) => return Err(h),
            },
        }
    }
}

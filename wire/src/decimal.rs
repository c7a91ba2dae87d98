//! A `u64` carried as a decimal string (like money), read from a string or an integer.
//! Use as `#[serde(with = "crate::decimal")]`.

use pag0_policy::Micros;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The same strict grammar as money ([`Micros`]): digits only, or a non-negative integer.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Micros::deserialize(d).map(Micros::get)
}

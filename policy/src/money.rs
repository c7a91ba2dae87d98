//! Money is an integer count of micro-USD (1 USD = 1_000_000). No floats anywhere on a money path.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money in micro-USD. Arithmetic is checked: overflow is an error, never a wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not a money amount (expected a whole number of micro-USD, as a string or integer)")]
    NotAnAmount(String),
    #[error("money amount overflows")]
    Overflow,
}

// === impl Micros ===

impl Micros {
    pub const ZERO: Micros = Micros(0);
    pub const MAX: Micros = Micros(u64::MAX);

    pub const fn new(micros: u64) -> Self {
        Micros(micros)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Micros) -> Result<Micros, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Micros)
            .ok_or(MoneyError::Overflow)
    }

    /// Subtraction that stops at zero: a counter or remaining room is never negative.
    pub fn saturating_sub(self, other: Micros) -> Micros {
        Micros(self.0.saturating_sub(other.0))
    }

    pub fn checked_mul(self, n: u64) -> Result<Micros, MoneyError> {
        self.0
            .checked_mul(n)
            .map(Micros)
            .ok_or(MoneyError::Overflow)
    }

    /// `self * n / d`, rounded up, without intermediate overflow for realistic inputs.
    /// Used for per-1k-token prices: a partial thousand still costs its share, rounded up
    /// so an estimate never undercounts.
    pub fn mul_div_ceil(self, n: u64, d: u64) -> Result<Micros, MoneyError> {
        if d == 0 {
            return Err(MoneyError::Overflow);
        }
        let wide = u128::from(self.0) * u128::from(n);
        let q = wide.div_ceil(u128::from(d));
        u64::try_from(q)
            .map(Micros)
            .map_err(|_| MoneyError::Overflow)
    }

    /// Parses a decimal string of micro-USD (`"100000000"`). No sign, no decimal point.
    pub fn parse(s: &str) -> Result<Micros, MoneyError> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::NotAnAmount(s.to_string()));
        }
        t.parse::<u64>()
            .map(Micros)
            .map_err(|_| MoneyError::Overflow)
    }

    /// From a JSON value: a decimal string or a non-negative integer.
    pub fn from_json(v: &serde_json::Value) -> Result<Micros, MoneyError> {
        match v {
            serde_json::Value::String(s) => Micros::parse(s),
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Micros)
                .ok_or_else(|| MoneyError::NotAnAmount(n.to_string())),
            other => Err(MoneyError::NotAnAmount(other.to_string())),
        }
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Micros::from_json(&v).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests;

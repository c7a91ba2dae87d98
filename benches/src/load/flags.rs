//! Value parsers the benchmark binaries' clap flags share (`pag0-load`, `pag0-instructions`).

use std::time::Duration;

use super::Variant;

/// A variant by its table name (`pag0`, `no-filter`, …) or its Rust name.
pub fn variant(s: &str) -> Result<Variant, String> {
    Variant::parse(s.trim()).ok_or_else(|| format!("unknown variant {s:?}"))
}

/// Seconds, fractions allowed (`0.5`).
pub fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(variant(" pag0 "), Ok(Variant::Pag0));
        assert!(variant("pag1").is_err());
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["-1", "soon", "NaN", "inf"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}

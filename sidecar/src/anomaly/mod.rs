//! Explainable anomaly detection over the usage ledger (docs/anomalies.md): the pure detector
//! (`detect`) and the sidecar's periodic task that feeds it from the store and stores what it
//! finds.

pub mod detect;

pub use detect::{detect, Input, Params, HOUR_MS};

//! pag0-benches: criterion benches live in benches/benches; the load benchmark against
//! baseline Envoy is [`load`] (binary `pag0-load`, `make bench`); a fleet of simulated instances
//! syncing with one control plane is [`fleet`] (binary `pag0-fleet`).

pub mod fleet;
pub mod load;

//! pag0-benches: criterion benches live in benches/benches; the load benchmark against
//! baseline Envoy is [`load`] (binary `pag0-load`, `make bench`).

pub mod load;

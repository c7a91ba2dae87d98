//! Pag0 proxy-wasm filter.

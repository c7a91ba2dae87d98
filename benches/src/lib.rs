//! pag0-benches: criterion benches live in benches/benches.

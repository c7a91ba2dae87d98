//! pag0-envoy

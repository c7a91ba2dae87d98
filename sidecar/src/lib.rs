//! pag0-sidecar

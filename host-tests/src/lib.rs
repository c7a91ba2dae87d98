//! pag0-host-tests

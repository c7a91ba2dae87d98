//! The engine and the pag0 plugin module, made once per test process and shared read-only.
//!
//! The module is `target/wasm32-wasip1/wasm-release/pag0_plugin.wasm`. Unless `PAG0_WASM` names a
//! prebuilt file, the first test to need it runs the build (cargo skips it when nothing changed),
//! so the tests always run the plugin as it is in the tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wasmtime::{Config, Engine, Module};

pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true);
        if std::env::var_os("PAG0_PERFMAP").is_some() {
            // /tmp/perf-<pid>.map names the compiled guest functions (host-tests/profile/).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64));
        match Engine::new(&config) {
            Ok(e) => e,
            Err(e) => panic!("creating the wasmtime engine: {e:#}"),
        }
    })
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where the release .wasm of plugin/ is (or will be).
pub fn wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PAG0_WASM") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("wasm32-wasip1/wasm-release/pag0_plugin.wasm")
}

fn build() -> Result<(), String> {
    if std::env::var_os("PAG0_WASM").is_some() || std::env::var_os("PAG0_SKIP_WASM_BUILD").is_some()
    {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-p",
            "pag0-plugin",
            "--profile",
            "wasm-release",
            "--target",
            "wasm32-wasip1",
        ])
        .output()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The compiled plugin. Panics with the build's errors if plugin/ does not build.
pub fn module() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| {
        if let Err(e) = build() {
            panic!(
                "building the plugin .wasm failed, so there is nothing to test.\n\
                 command: cargo build -p pag0-plugin --profile wasm-release --target wasm32-wasip1\n{e}"
            );
        }
        let path = wasm_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => panic!("reading {}: {e} (build it with `cargo build -p pag0-plugin --profile wasm-release --target wasm32-wasip1`)", path.display()),
        };
        match Module::new(engine(), &bytes) {
            Ok(m) => m,
            Err(e) => panic!("compiling {}: {e:#}", path.display()),
        }
    })
}

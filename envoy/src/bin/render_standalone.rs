//! Prints `envoy/standalone.yaml` rendered from `envoy/policies/acme.json`:
//! `cargo run -p pag0-envoy --bin pag0-render-standalone > envoy/standalone.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", pag0_envoy::policies::render_standalone_yaml()?);
    Ok(())
}

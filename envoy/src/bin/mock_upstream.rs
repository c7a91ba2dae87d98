//! `pag0-mock-upstream --listen 127.0.0.1:0`: prints `listening on 127.0.0.1:PORT`, then serves
//! the mock paid APIs (see `pag0_envoy::mock`) until killed.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;

/// The mock paid APIs the tests and the demo call through Envoy (routes: `pag0_envoy::mock`);
/// prints `listening on ADDR` once bound.
#[derive(Debug, Parser)]
#[command(name = "pag0-mock-upstream")]
struct Args {
    /// Address to listen on (port 0: an ephemeral one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {:?}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, pag0_envoy::mock::app(Default::default()))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

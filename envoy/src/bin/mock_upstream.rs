//! `pag0-mock-upstream --listen 127.0.0.1:0`: prints `listening on 127.0.0.1:PORT`, then serves
//! the mock paid APIs (see `pag0_envoy::mock`) until killed.

use std::io::Write;

use anyhow::{bail, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next() {
                Some(v) => listen = v,
                None => bail!("--listen needs an address, e.g. 127.0.0.1:0"),
            },
            "-h" | "--help" => {
                println!("usage: pag0-mock-upstream [--listen 127.0.0.1:0]");
                return Ok(());
            }
            other => bail!(
                "unknown argument {other:?}; usage: pag0-mock-upstream [--listen 127.0.0.1:0]"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
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

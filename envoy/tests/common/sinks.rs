//! Receivers on loopback for notification tests: a minimal SMTP server and a Slack-style
//! webhook receiver (the same as e2e_approvals.rs uses; include with
//! `#[path = "common/sinks.rs"] mod sinks;`).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// What the receivers got: e-mails (recipients, data) and Slack posts (JSON bodies).
#[derive(Default)]
pub struct Inbox {
    pub mails: Mutex<Vec<(Vec<String>, String)>>,
    pub slack: Mutex<Vec<Value>>,
}

/// A minimal SMTP server (EHLO, MAIL, RCPT, DATA, RSET, QUIT), enough for lettre; like the
/// sink of sidecar/tests/approvals.rs, on std threads. Stops with the test process.
pub fn smtp_sink(inbox: Arc<Inbox>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming().map_while(Result::ok) {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let Ok(mut w) = sock.try_clone() else { return };
                let mut lines = BufReader::new(sock).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut to = Vec::new();
                while let Some(Ok(line)) = lines.next() {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("RCPT TO:") {
                        to.push(
                            line[8..]
                                .trim()
                                .trim_matches(|c| c == '<' || c == '>')
                                .to_string(),
                        );
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        let _ = w.write_all(b"354 go ahead\r\n");
                        let mut data = String::new();
                        while let Some(Ok(l)) = lines.next() {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        inbox
                            .mails
                            .lock()
                            .unwrap()
                            .push((std::mem::take(&mut to), data));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else {
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An axum server on 127.0.0.1:0 that keeps every JSON body POSTed to `/slack`.
pub fn slack_receiver(inbox: Arc<Inbox>) -> (SocketAddr, tokio::runtime::Runtime) {
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    async fn slack(State(inbox): State<Arc<Inbox>>, Json(v): Json<Value>) -> &'static str {
        inbox.slack.lock().unwrap().push(v);
        "ok"
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/slack", post(slack)).with_state(inbox);
    rt.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, rt)
}

//! A small blocking HTTP client for agents talking to Envoy: sets the `Host` (authority) that
//! the filter prices by, the API key, and keeps the whole reply for assertions.

use std::time::Duration;

use anyhow::Result;
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The API key header (README.md#configuration-reference default).
pub const API_KEY_HEADER: &str = "x-pag0-api-key";

/// One agent request.
#[derive(Clone, Debug, Default)]
pub struct Call {
    pub method: String,
    /// The authority, e.g. `api.openai.com`.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Call {
    pub fn new(method: &str, host: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            ..Self::default()
        }
    }
    pub fn get(host: &str, path: &str) -> Self {
        Self::new("GET", host, path)
    }
    pub fn post(host: &str, path: &str) -> Self {
        Self::new("POST", host, path)
    }
    pub fn key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_owned());
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// The whole reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// `x-pag0-code`, or `-` when absent.
    pub fn code(&self) -> &str {
        self.header("x-pag0-code").unwrap_or("-")
    }
    pub fn decision(&self) -> &str {
        self.header("x-pag0-decision").unwrap_or("-")
    }
}

/// A client bound to one Envoy listener.
#[derive(Clone)]
pub struct Agent {
    base: String,
    client: Client,
}

impl Agent {
    pub fn new(envoy_port: u16) -> Result<Self> {
        let client = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(
                std::env::var("PAG0_CLIENT_TIMEOUT_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30),
            ))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            base: format!("http://127.0.0.1:{envoy_port}"),
            client,
        })
    }

    pub fn send(&self, call: &Call) -> Result<Reply> {
        let method = reqwest::Method::from_bytes(call.method.as_bytes())?;
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, call.path));
        req = req.header(reqwest::header::HOST, HeaderValue::from_str(&call.host)?);
        if let Some(k) = &call.api_key {
            req = req.header(API_KEY_HEADER, k);
        }
        for (k, v) in &call.headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        if let Some(b) = &call.body {
            req = req.body(b.clone());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text()?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

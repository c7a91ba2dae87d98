//! The console's files, embedded in the binary at build time (rust-embed, also in debug
//! builds): `console/web/` of the repository, including `console/web/pkg/`, the what-if
//! engine that `make console` generates with wasm-bindgen. Without it the sidecar still
//! builds and serves the console; the page then says to run `make console`, and the
//! sidecar's log says so at start ([`ENGINE_MISSING`]).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../console/web/"]
#[exclude = "*.map"]
struct Files;

/// The wasm-bindgen module the pages import.
pub const ENGINE: &str = "pkg/pag0_whatif_bg.wasm";

pub const ENGINE_MISSING: &str = "console: the what-if engine is not in this build \
    (console/web/pkg/ is missing): run `make console`, then rebuild the sidecar; \
    the console works without it, except Policy validation as you type and What-if";

/// Whether this build carries the what-if engine.
pub fn engine_embedded() -> bool {
    Files::get(ENGINE).is_some()
}

/// Same-origin everything; wasm compilation allowed (`wasm-unsafe-eval`), no inline script,
/// no framing.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn file(path: &str, headers: &HeaderMap) -> Response {
    let Some(f) = Files::get(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no console file {path:?}"),
        )
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(f.metadata.sha256_hash()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, f.data.into_owned()).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(f.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a new sidecar build must not run yesterday's scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `GET /console` → `/console/` (relative URLs in the page resolve under it).
pub async fn root_redirect() -> Redirect {
    Redirect::permanent("/console/")
}

pub async fn index(headers: HeaderMap) -> Response {
    file("index.html", &headers)
}

pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    file(&path, &headers)
}

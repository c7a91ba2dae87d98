//! Console sessions: a sign-in with an admin or approver token is exchanged for a random
//! session id in an `HttpOnly; SameSite=Strict` cookie, kept here, server side, with expiry.
//!
//! - The session stands for the token's [`Principal`]: `/v1` handlers authorise it exactly as
//!   they would the bearer token (`auth::principal_from` reads the cookie when no
//!   `Authorization` header is sent).
//! - CSRF: every state-changing request (any method but GET/HEAD/OPTIONS) authenticated by
//!   the cookie must carry the session's CSRF token in `x-pag0-csrf` ([`csrf_guard`]). A
//!   cross-site page can neither read that token (it is only in same-origin answers) nor set a
//!   custom header without a CORS preflight the sidecar never grants; `SameSite=Strict` keeps
//!   the cookie off cross-site requests in the first place.
//! - Ids and CSRF tokens are 256 random bits; the table is keyed by the id's SHA-256 (like
//!   bearer tokens, [`crate::auth`]), so a lookup leaks nothing through timing.
//! - A session ends at sign-out, after [`IDLE_MS`] without a request, or [`MAX_MS`] after
//!   sign-in. Sessions live in this process: a restart signs everyone out, and behind a fleet
//!   of sidecars the console must stick to one (the API itself needs no stickiness).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::AppError;
use crate::AppState;

/// The cookie's name.
pub const COOKIE: &str = "pag0_session";
/// The header a state-changing session request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-pag0-csrf";
/// A session unused this long ends (the console's pages refresh every few seconds).
pub const IDLE_MS: i64 = 60 * 60 * 1000;
/// A session ends this long after sign-in, used or not.
pub const MAX_MS: i64 = 12 * 60 * 60 * 1000;
/// Sessions held at most; the oldest go first (only holders of a valid token can sign in).
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

/// A fresh session: the cookie value (shown once, never stored) and what is stored.
pub struct Issued {
    pub id: String,
    pub session: Session,
}

/// The sessions of this process. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    by_digest: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

// === impl Session ===

impl Session {
    pub fn expires_ms(&self) -> i64 {
        self.last_seen_ms
            .saturating_add(IDLE_MS)
            .min(self.created_ms.saturating_add(MAX_MS))
    }

    fn live(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms()
    }
}

// === impl Sessions ===

impl Sessions {
    pub fn create(&self, principal: Principal, now_ms: i64) -> Issued {
        let id = random_hex();
        let session = Session {
            principal,
            csrf: random_hex(),
            created_ms: now_ms,
            last_seen_ms: now_ms,
        };
        if let Ok(mut map) = self.by_digest.lock() {
            map.retain(|_, s| s.live(now_ms));
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.created_ms)
                    .map(|(k, _)| *k)
                {
                    map.remove(&oldest);
                }
            }
            map.insert(digest(&id), session.clone());
        }
        Issued { id, session }
    }

    /// The live session named by the request's cookie, its idle clock restarted.
    pub fn touch(&self, headers: &HeaderMap, now_ms: i64) -> Option<Session> {
        let id = cookie(headers)?;
        let mut map = self.by_digest.lock().ok()?;
        let key = digest(id);
        match map.get_mut(&key) {
            Some(s) if s.live(now_ms) => {
                s.last_seen_ms = now_ms;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Signs the request's session out; true if there was one.
    pub fn remove(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        self.by_digest
            .lock()
            .is_ok_and(|mut map| map.remove(&digest(id)).is_some())
    }

    pub fn principal(&self, headers: &HeaderMap, now_ms: i64) -> Option<Principal> {
        self.touch(headers, now_ms).map(|s| s.principal)
    }
}

/// The session id in the request's `Cookie` header(s), if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session (`secure`: the console is served over https).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        MAX_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes it.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

fn state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a state-changing request authenticated by the session cookie unless it carries
/// the session's CSRF token. Requests with a bearer token are not affected (a browser never
/// adds one on its own), nor are requests without the cookie.
pub async fn csrf_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if state_changing(req.method())
        && !headers.contains_key(header::AUTHORIZATION)
        && cookie(headers).is_some()
    {
        let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let ok = match (
            state.sessions.touch(headers, state.clock.now_ms()),
            presented,
        ) {
            (Some(s), Some(p)) => digest(p) == digest(&s.csrf),
            // An expired or unknown session: the handler answers 401.
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !ok {
            return AppError::Forbidden(
                "a console session request that changes state needs its x-pag0-csrf header",
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::auth::Role;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Admin,
        }
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_session_ends_when_idle_or_at_its_maximum_age() {
        let s = Sessions::default();
        let issued = s.create(alice(), 0);
        let h = with_cookie(&format!("theme=dark; {COOKIE}={}", issued.id));
        assert_eq!(s.principal(&h, IDLE_MS - 1), Some(alice()));
        // Used just before the idle limit: alive for another IDLE_MS ...
        assert_eq!(s.principal(&h, 2 * IDLE_MS - 2), Some(alice()));
        // ... but never past MAX_MS.
        let mut t = 2 * IDLE_MS - 2;
        while t + IDLE_MS / 2 < MAX_MS {
            t += IDLE_MS / 2;
            assert!(s.principal(&h, t).is_some(), "at {t}");
        }
        assert_eq!(s.principal(&h, MAX_MS), None);
        // And idle expiry on its own.
        let other = s.create(alice(), 0);
        let h2 = with_cookie(&format!("{COOKIE}={}", other.id));
        assert_eq!(s.principal(&h2, IDLE_MS), None);
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_sign_out_forgets_the_session() {
        let s = Sessions::default();
        let a = s.create(alice(), 0);
        let b = s.create(alice(), 0);
        assert_ne!(a.id, b.id);
        assert_ne!(a.session.csrf, b.session.csrf);
        assert_eq!(a.id.len(), 64);
        let h = with_cookie(&format!("{COOKIE}={}", a.id));
        assert!(s.remove(&h));
        assert_eq!(s.principal(&h, 1), None);
        assert!(!s.remove(&h));
        // The other session is untouched; a made-up id names nothing.
        assert!(s
            .principal(&with_cookie(&format!("{COOKIE}={}", b.id)), 1)
            .is_some());
        assert!(s
            .principal(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64))), 1)
            .is_none());
        assert!(s.principal(&HeaderMap::new(), 1).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = set_cookie("abc", false);
        assert!(c.starts_with("pag0_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age="));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}

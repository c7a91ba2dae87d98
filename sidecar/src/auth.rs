//! Bearer tokens and roles. Tokens are kept only as SHA-256 digests and looked up by digest,
//! so comparing a presented token leaks nothing about the stored ones through timing.
//!
//! Roles: `Admin` (org admins, `--admin-token NAME=TOKEN`), `Filter` (the Envoy filter's sync
//! secret), and `Approver` (bound to one approver's e-mail) reserved for the approvals API.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::AppState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    /// An approver identified by e-mail (`--approver-token EMAIL=TOKEN`): may list, read and
    /// decide approvals of the projects that list this e-mail; nothing else.
    Approver {
        email: String,
    },
    Filter,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the author of policy versions.
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenSpecError {
    #[error("admin token {0:?} must be NAME=TOKEN")]
    NotNameEqualsToken(String),
    #[error("approver token {0:?} must be EMAIL=TOKEN")]
    NotEmailEqualsToken(String),
    #[error("token for {0:?} is shorter than 16 characters")]
    TooShort(String),
    #[error("the same token is given twice ({0:?})")]
    Duplicate(String),
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

// === impl Tokens ===

impl Tokens {
    pub fn add(&mut self, token: &str, principal: Principal) -> Result<(), TokenSpecError> {
        if token.len() < 16 {
            return Err(TokenSpecError::TooShort(principal.name));
        }
        let name = principal.name.clone();
        if self.by_digest.insert(digest(token), principal).is_some() {
            return Err(TokenSpecError::Duplicate(name));
        }
        Ok(())
    }

    /// `NAME=TOKEN` (one `--admin-token`, or one comma-separated item of `PAG0_ADMIN_TOKENS`).
    pub fn add_admin_spec(&mut self, spec: &str) -> Result<(), TokenSpecError> {
        let (name, token) = spec
            .split_once('=')
            .filter(|(n, t)| !n.trim().is_empty() && !t.is_empty())
            .ok_or_else(|| {
                TokenSpecError::NotNameEqualsToken(spec.split('=').next().unwrap_or("").into())
            })?;
        self.add(
            token.trim(),
            Principal {
                name: name.trim().to_string(),
                role: Role::Admin,
            },
        )
    }

    /// `EMAIL=TOKEN` (one `--approver-token`, or one comma-separated item of
    /// `PAG0_APPROVER_TOKENS`).
    pub fn add_approver_spec(&mut self, spec: &str) -> Result<(), TokenSpecError> {
        let (email, token) = spec
            .split_once('=')
            .filter(|(e, t)| e.contains('@') && !t.is_empty())
            .ok_or_else(|| {
                TokenSpecError::NotEmailEqualsToken(spec.split('=').next().unwrap_or("").into())
            })?;
        let email = email.trim().to_ascii_lowercase();
        self.add(
            token.trim(),
            Principal {
                name: email.clone(),
                role: Role::Approver { email },
            },
        )
    }

    pub fn add_sync_secret(&mut self, secret: &str) -> Result<(), TokenSpecError> {
        self.add(
            secret,
            Principal {
                name: "filter".into(),
                role: Role::Filter,
            },
        )
    }

    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_digest.get(&digest(token))
    }

    pub fn has_role(&self, pred: impl Fn(&Role) -> bool) -> bool {
        self.by_digest.values().any(|p| pred(&p.role))
    }
}

fn principal(parts: &Parts, state: &AppState) -> Result<Principal, AppError> {
    principal_from(&parts.headers, state)
}

/// The bearer token's principal, else the console session's (for handlers that accept
/// several roles).
pub(crate) fn principal_from(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<Principal, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // A console session stands for the token it was signed in with (same Principal).
        return state
            .sessions
            .principal(headers, state.clock.now_ms())
            .ok_or(AppError::Unauthorized);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(AppError::Unauthorized)?;
    state
        .tokens
        .lookup(token)
        .cloned()
        .ok_or(AppError::Unauthorized)
}

/// An org admin.
pub struct Admin(pub Principal);

/// The Envoy filter (sync secret).
pub struct Filter(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = principal(parts, state)?;
        match p.role {
            Role::Admin => Ok(Admin(p)),
            Role::Approver { .. } | Role::Filter => {
                Err(AppError::Forbidden("admin token required"))
            }
        }
    }
}

impl FromRequestParts<AppState> for Filter {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = principal(parts, state)?;
        match p.role {
            Role::Filter => Ok(Filter(p)),
            Role::Admin | Role::Approver { .. } => {
                Err(AppError::Forbidden("the filter's sync secret required"))
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Endpoint rules: which hosts (and path prefixes) an allow-list, a block-list or a catalogue
//! entry covers (docs/policy.md).
//!
//! - `example.com` matches `example.com` and every subdomain (`api.example.com`), never
//!   `badexample.com`.
//! - `api.openai.com/v1/chat` also requires the request path to start with `/v1/chat` on whole
//!   segments: `/v1/chat` and `/v1/chat/completions` match, `/v1/chatter` does not.
//! - Ports are ignored on both sides; hosts compare case-insensitively; a trailing dot
//!   (`example.com.`) is ignored; the query string is not part of the path.
//! - The request must name one host ([`parse_authority`]) and its path must normalise
//!   ([`crate::path::normalise`]); otherwise [`RequestTarget::parse`] refuses it before any
//!   rule is looked at. Rules match the normalised path (rule paths are normalised the same
//!   way). Block rules compare path segments case-insensitively (ASCII), allow rules and
//!   catalogue entries exactly.
//! - A request path with a `.` or `..` segment is matched as resolved; in addition a block
//!   rule also matches it as written (dots kept) and an allow rule must match both: an
//!   upstream that does not resolve dot segments cannot be reached past a rule either.

use std::fmt;
use std::net::Ipv6Addr;

use crate::path::{normalise, NormalPath, PathError};

/// One parsed rule entry: a host suffix and an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern {
    /// Lower-case, no port, no trailing dot.
    host: Box<str>,
    /// Path segments (no empty ones); empty = any path.
    segments: Vec<Box<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is empty")]
    Empty,
    #[error("{0:?}: write the host without a scheme (e.g. \"api.openai.com\")")]
    Scheme(String),
    #[error("{0:?}: a host already covers its subdomains; drop the \"*.\"")]
    Wildcard(String),
    #[error("{0:?} is not a host name")]
    BadHost(String),
    #[error("{0:?}: the path is ambiguous ({1})")]
    BadPath(String, PathError),
}

/// Why a request's `:authority` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("it is empty")]
    Empty,
    #[error("the port is not a number from 0 to 65535")]
    BadPort,
    #[error("it is not one host name (dot-separated labels of letters, digits, '-' and '_'), an IPv4 address or a bracketed IPv6 address, with an optional port")]
    BadHost,
}

/// Why a request cannot be matched against rules at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the authority is refused: {0}")]
    Authority(AuthorityError),
    #[error("the path is ambiguous: {0}")]
    Path(PathError),
}

// === impl EndpointPattern ===

impl EndpointPattern {
    /// Parses `host[:port][/path]`. The port is accepted and ignored.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(PatternError::Empty);
        }
        if t.contains("://") {
            return Err(PatternError::Scheme(s.to_string()));
        }
        if t.starts_with("*.") {
            return Err(PatternError::Wildcard(s.to_string()));
        }
        let (authority, path) = match t.find('/') {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let host = strip_port(authority);
        let host = host.strip_suffix('.').unwrap_or(host);
        if !is_host_name(host) {
            return Err(PatternError::BadHost(s.to_string()));
        }
        let segments = if path.is_empty() {
            Vec::new()
        } else {
            normalise(path)
                .map_err(|e| PatternError::BadPath(s.to_string(), e))?
                .segments
                .into_iter()
                .map(String::into_boxed_str)
                .collect()
        };
        Ok(EndpointPattern {
            host: host.to_ascii_lowercase().into_boxed_str(),
            segments,
        })
    }

    /// The host part (lower-case).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn has_path(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Does this rule cover a request to `authority` (host, maybe with a port) and `path`
    /// (maybe with a query)? `block` selects the rule kind (and the fail-closed direction):
    /// a request that [`RequestTarget::parse`] refuses matches every block rule and no other.
    pub fn matches(&self, authority: &str, path: &str, block: bool) -> bool {
        match RequestTarget::parse(authority, path) {
            Ok(t) => self.matches_target(&t, block),
            Err(_) => block,
        }
    }

    /// As [`EndpointPattern::matches`], with the request's host and path prepared once.
    pub fn matches_target(&self, t: &RequestTarget<'_>, block: bool) -> bool {
        if !host_matches(&self.host, t.host) {
            return false;
        }
        if self.segments.is_empty() {
            return true;
        }
        let covers = |got: &[String]| {
            self.segments.len() <= got.len()
                && self.segments.iter().zip(got).all(|(want, got)| {
                    if block {
                        got.eq_ignore_ascii_case(want)
                    } else {
                        got == &**want
                    }
                })
        };
        let resolved = covers(&t.path.segments);
        match &t.path.literal {
            None => resolved,
            Some(literal) if block => resolved || covers(literal),
            Some(literal) => resolved && covers(literal),
        }
    }

    /// Number of bytes of host plus path segments: the longer, the more specific.
    pub fn specificity(&self) -> usize {
        self.host.len() + self.segments.iter().map(|s| s.len() + 1).sum::<usize>()
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        for seg in &self.segments {
            write!(f, "/{seg}")?;
        }
        Ok(())
    }
}

/// A request's host (port and trailing dot removed) and normalised path (query removed),
/// prepared once for matching against many rules.
#[derive(Clone, Debug)]
pub struct RequestTarget<'a> {
    pub host: &'a str,
    path: NormalPath,
}

// === impl RequestTarget ===

impl<'a> RequestTarget<'a> {
    /// Refuses an authority that is not one host and a path that does not normalise.
    pub fn parse(authority: &'a str, path: &str) -> Result<Self, TargetError> {
        let host = parse_authority(authority).map_err(TargetError::Authority)?;
        let path = normalise(path).map_err(TargetError::Path)?;
        Ok(RequestTarget { host, path })
    }

    /// The normalised path (for messages).
    pub fn path(&self) -> String {
        self.path.to_path()
    }
}

/// `rule` is lower-case without a port. True if `host` is `rule` or a subdomain of it.
pub fn host_matches(rule: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() == rule.len() {
        return host.eq_ignore_ascii_case(rule);
    }
    if host.len() > rule.len() {
        let split = host.len() - rule.len();
        if let (Some(prefix), Some(suffix)) = (host.get(..split), host.get(split..)) {
            return prefix.ends_with('.') && suffix.eq_ignore_ascii_case(rule);
        }
    }
    false
}

/// The host of an `:authority` value (`host`, `host:port`, `[v6]`, `[v6]:port`; a trailing dot
/// removed), or why it is not one host: two hosts joined by a comma, `user@host`, `host;`,
/// `host:80:80`, `host%2e`, an empty value, a bad port are all refused.
pub fn parse_authority(authority: &str) -> Result<&str, AuthorityError> {
    if authority.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(AuthorityError::BadHost)?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(AuthorityError::BadHost);
        }
        if !after.is_empty() {
            let port = after.strip_prefix(':').ok_or(AuthorityError::BadHost)?;
            check_port(port)?;
        }
        return Ok(v6);
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) => {
            if h.contains(':') {
                return Err(AuthorityError::BadHost);
            }
            check_port(port)?;
            h
        }
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if !is_host_name(host) {
        return Err(AuthorityError::BadHost);
    }
    Ok(host)
}

/// The host of an `:authority` value, leniently (port and IPv6 brackets handled, trailing dot
/// removed, nothing refused): for the approval binding. Rule matching uses [`parse_authority`].
pub fn request_host(authority: &str) -> &str {
    let host = strip_port(authority.trim());
    host.strip_suffix('.').unwrap_or(host)
}

fn check_port(port: &str) -> Result<(), AuthorityError> {
    if (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| p <= 65535)
    {
        Ok(())
    } else {
        Err(AuthorityError::BadPort)
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // `[::1]:8080` → `::1`
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod request_tests;

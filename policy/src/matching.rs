//! Endpoint rules: which hosts (and path prefixes) an allow-list, a block-list or a catalogue
//! entry covers (SPEC §3).
//!
//! - `example.com` matches `example.com` and every subdomain (`api.example.com`), never
//!   `badexample.com`.
//! - `api.openai.com/v1/chat` also requires the request path to start with `/v1/chat` on whole
//!   segments: `/v1/chat` and `/v1/chat/completions` match, `/v1/chatter` does not.
//! - Ports are ignored on both sides; hosts compare case-insensitively; a trailing dot
//!   (`example.com.`) is ignored; the query string is not part of the path.
//! - Empty path segments (`//`) are ignored. A request path that could mean something else after
//!   normalisation upstream (a `.` or `..` segment, an encoded `.` `/` `\`, or a backslash) is
//!   *ambiguous*: it never matches an allow rule with a path and always matches a block rule
//!   with a path (fail closed both ways).

use std::fmt;

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
}

/// How a request path relates to path-bearing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathClass {
    Plain,
    Ambiguous,
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
        let segments = path
            .split('/')
            .filter(|seg| !seg.is_empty())
            .map(Box::from)
            .collect();
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
    /// (maybe with a query)? `block` selects the fail-closed direction for ambiguous paths.
    pub fn matches(&self, authority: &str, path: &str, block: bool) -> bool {
        self.matches_target(&RequestTarget::new(authority, path), block)
    }

    /// As [`EndpointPattern::matches`], with the request's host and path prepared once.
    pub fn matches_target(&self, t: &RequestTarget<'_>, block: bool) -> bool {
        if !host_matches(&self.host, t.host) {
            return false;
        }
        if self.segments.is_empty() {
            return true;
        }
        if t.ambiguous {
            return block;
        }
        let mut req = t.path.split('/').filter(|seg| !seg.is_empty());
        self.segments
            .iter()
            .all(|want| req.next().is_some_and(|got| got == &**want))
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

/// A request's host (port and trailing dot removed) and path (query removed), prepared once
/// for matching against many rules.
#[derive(Clone, Copy, Debug)]
pub struct RequestTarget<'a> {
    pub host: &'a str,
    pub path: &'a str,
    ambiguous: bool,
}

// === impl RequestTarget ===

impl<'a> RequestTarget<'a> {
    pub fn new(authority: &'a str, path: &'a str) -> Self {
        let path = strip_query(path);
        RequestTarget {
            host: request_host(authority),
            path,
            ambiguous: classify(path) == PathClass::Ambiguous,
        }
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

/// The host of an `:authority` value: port and IPv6 brackets handled, trailing dot removed.
pub fn request_host(authority: &str) -> &str {
    let host = strip_port(authority.trim());
    host.strip_suffix('.').unwrap_or(host)
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

fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// One pass over the bytes (this runs on every request): a backslash or a percent-encoded
/// `.`, `/` or `\` anywhere, or a `.`/`..` segment, makes the path ambiguous.
fn classify(path: &str) -> PathClass {
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return PathClass::Ambiguous,
            b'%' => {
                if let Some(&[hi, lo]) = bytes.get(i + 1..i + 3) {
                    if matches!(
                        (hi, lo.to_ascii_lowercase()),
                        (b'2', b'e' | b'f') | (b'5', b'c')
                    ) {
                        return PathClass::Ambiguous;
                    }
                }
            }
            _ => {}
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return PathClass::Ambiguous;
    }
    PathClass::Plain
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;

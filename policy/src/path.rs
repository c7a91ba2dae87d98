//! Request path normalisation: the one spelling endpoint rules are matched on (issue 20).
//!
//! [`normalise`] takes a request `:path` (the query and fragment are cut off, they are not part
//! of the match) and
//! - percent-decodes unreserved characters (`A-Z a-z 0-9 - . _ ~`): `/%761/%61dmin` is
//!   `/v1/admin`;
//! - writes every other percent-escape with upper-case hex digits, and a raw space or non-ASCII
//!   byte as its escape, so `/caf%c3%a9` and `/café` are one spelling;
//! - merges slashes (`//` is `/`) and resolves `.` and `..` segments (RFC 3986 §5.2.4; `..` at
//!   the root stays at the root);
//! - changes nothing else (letter case included).
//!
//! What could mean something else to an upstream is refused (fail closed), never guessed:
//! an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, NUL or any other control character (raw or
//! encoded), a `;` path parameter (raw or `%3B`, so `..;` too), a double
//! percent-encoding (`%25` followed by two hex digits, after decoding), a malformed escape
//! (`%`, `%4`, `%zz`), escapes that are not UTF-8 once decoded, and a path that does not start
//! with `/`.

use std::fmt::Write as _;

/// Why a path is refused as ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with \"/\"")]
    NotAbsolute,
    #[error("a malformed percent-escape (\"%\" must be followed by two hex digits)")]
    BadEscape,
    #[error("an encoded \"/\" or \"\\\" (%2F, %5C)")]
    EncodedSeparator,
    #[error("a backslash")]
    Backslash,
    #[error("a NUL or another control character (raw or encoded)")]
    Control,
    #[error("a \";\" path parameter")]
    PathParameter,
    #[error("a double percent-encoding (%25 followed by two hex digits)")]
    DoubleEncoding,
    #[error("percent-escapes that are not UTF-8 once decoded")]
    NotUtf8,
}

/// A normalised path: its segments (none empty, none `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalPath {
    /// After dot-segment resolution.
    pub segments: Vec<String>,
    /// The decoded segments before dot-segment resolution (empty ones dropped), kept only
    /// when the path had a `.` or `..` segment: what an upstream that does not resolve dot
    /// segments would see.
    pub literal: Option<Vec<String>>,
    trailing_slash: bool,
}

// === impl NormalPath ===

impl NormalPath {
    /// The normalised path as a string: `/` + segments joined by `/`, with the trailing
    /// slash kept (`/v1/chat/` stays `/v1/chat/`; `/v1/x/..` is `/v1/`).
    pub fn to_path(&self) -> String {
        let mut s = String::with_capacity(self.segments.iter().map(|x| x.len() + 1).sum());
        for seg in &self.segments {
            s.push('/');
            s.push_str(seg);
        }
        if self.trailing_slash || self.segments.is_empty() {
            s.push('/');
        }
        s
    }
}

/// Normalises a request path (query and fragment removed) or refuses it as ambiguous.
pub fn normalise(path: &str) -> Result<NormalPath, PathError> {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = path.get(..end).unwrap_or(path);
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<String> = Vec::new();
    let mut literal: Vec<String> = Vec::new();
    let mut dots = false;
    let mut trailing_slash = rest.is_empty() || rest.ends_with('/');
    let raw: Vec<&str> = rest.split('/').collect();
    let last = raw.len().saturating_sub(1);
    for (i, raw_seg) in raw.into_iter().enumerate() {
        if raw_seg.is_empty() {
            continue;
        }
        let seg = decode_segment(raw_seg)?;
        match seg.as_str() {
            "." => {
                dots = true;
                trailing_slash |= i == last;
            }
            ".." => {
                dots = true;
                trailing_slash |= i == last;
                segments.pop();
            }
            _ => segments.push(seg.clone()),
        }
        literal.push(seg);
    }
    Ok(NormalPath {
        segments,
        literal: dots.then_some(literal),
        trailing_slash,
    })
}

/// [`normalise`] as a string (see [`NormalPath::to_path`]).
pub fn normalise_str(path: &str) -> Result<String, PathError> {
    normalise(path).map(|p| p.to_path())
}

/// One segment (no `/` in it): decoded, canonical escapes, or the reason it is refused.
fn decode_segment(seg: &str) -> Result<String, PathError> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    // Every byte the segment stands for, for the UTF-8 check of decoded escapes.
    let mut bytes: Vec<u8> = Vec::new();
    let mut escaped_high = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_value);
                let lo = b.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi * 16 + lo;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b';' => return Err(PathError::PathParameter),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    _ if is_unreserved(v) => out.push(char::from(v)),
                    _ => {
                        escaped_high |= v >= 0x80;
                        push_escape(&mut out, v);
                    }
                }
                bytes.push(v);
                i += 3;
            }
            b';' => return Err(PathError::PathParameter),
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            b' ' | 0x80..=0xff => {
                push_escape(&mut out, c);
                bytes.push(c);
                i += 1;
            }
            _ => {
                out.push(char::from(c));
                bytes.push(c);
                i += 1;
            }
        }
    }
    if escaped_high && std::str::from_utf8(&bytes).is_err() {
        return Err(PathError::NotUtf8);
    }
    if has_double_encoding(&out) {
        return Err(PathError::DoubleEncoding);
    }
    Ok(out)
}

/// `%25` followed by two hex digits: a second decoding upstream would yield another character.
fn has_double_encoding(s: &str) -> bool {
    s.as_bytes().windows(5).any(
        |w| matches!(w, [b'%', b'2', b'5', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()),
    )
}

fn push_escape(out: &mut String, v: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "%{v:02X}");
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(v: u8) -> bool {
    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests;

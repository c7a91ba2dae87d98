//! The request headers the filter itself reads (API key, request line, approval headers), taken
//! out of the request [`Snapshot`] in one pass over its pairs: each name is matched once and
//! the values are moved, not copied. The same pass collects the `x-pag0-*` names (and the API
//! key header) to strip, and drops the pairs it moved out of the copy.

use std::borrow::Cow;
use std::mem::take;

use crate::approval::{
    self, Incoming, APPROVAL_ID_HEADER, CALLBACK_URL_HEADER, JUSTIFICATION_HEADER,
    REQUESTED_BY_HEADER,
};
use crate::host::Host;

use super::{Snapshot, PAG0_HEADER_PREFIX};

/// `x-pag0-requires-approval: true`: the agent asks for an approval up front.
const REQUIRES_APPROVAL_HEADER: &str = "x-pag0-requires-approval";

/// What the filter read from the request headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    pub api_key: Option<String>,
    pub requires_approval: bool,
    /// The approval headers and the request line.
    pub approval: Incoming,
    /// Every `x-pag0-*` name and the API key header, each once, in the host's order: to be
    /// removed from the host's map (they are already gone from the snapshot), so nothing the
    /// agent sends to pag0 leaks to a paid API and nothing can name a project.
    pub strip: Vec<String>,
}

impl RequestHeaders {
    /// Takes the headers out of `req` (a snapshot of the request headers): afterwards the
    /// snapshot no longer has the stripped headers, nor `:method`, `:authority`, `:path`.
    /// Names are compared case-insensitively; of several values, the first counts.
    pub fn take<H: Host>(req: &Snapshot<'_, H>, api_key_header: &str) -> Self {
        let mut pass = Pass::default();
        req.retain_mut(|pair| pass.take(pair, api_key_header));
        let text = |v: Option<String>| v.and_then(approval::header_text);
        RequestHeaders {
            api_key: pass.api_key,
            requires_approval: pass.requires_approval.unwrap_or(false),
            approval: Incoming {
                approval_id: text(pass.approval_id),
                justification: text(pass.justification),
                requested_by: text(pass.requested_by),
                callback_url: text(pass.callback_url),
                method: pass.method.unwrap_or_default(),
                authority: pass.authority.unwrap_or_default(),
                path: pass.path.unwrap_or_default(),
                credential: pag0_policy::approval::credential_sha256(|name| {
                    pass.credentials
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.clone())
                }),
            },
            strip: pass.strip,
        }
    }
}

/// The first value of each header seen so far.
#[derive(Default)]
struct Pass {
    api_key: Option<String>,
    requires_approval: Option<bool>,
    approval_id: Option<String>,
    justification: Option<String>,
    requested_by: Option<String>,
    callback_url: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    /// First value of each of `pag0_policy::approval::CREDENTIAL_HEADERS` (left in place).
    credentials: Vec<(&'static str, String)>,
    strip: Vec<String>,
}

impl Pass {
    /// Takes what it needs from one pair; whether the pair stays in the snapshot.
    fn take(&mut self, (name, value): &mut (String, String), api_key_header: &str) -> bool {
        // Envoy hands names over lower-case; any other is lower-cased for the match.
        let lower = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name.as_str())
        };
        if let Some(&cred) = pag0_policy::approval::CREDENTIAL_HEADERS
            .iter()
            .find(|c| **c == &*lower)
        {
            if !self.credentials.iter().any(|(n, _)| *n == cred) {
                self.credentials.push((cred, value.clone()));
            }
        }
        // A second `:authority` or `:path` (Envoy never sends one; a host might): both values
        // are kept, joined so that the policy core refuses the request (a comma makes the
        // authority not one host, a newline makes the path ambiguous) instead of matching
        // rules against one value while the upstream may see the other.
        let joined = match &*lower {
            ":authority" => self.authority.as_mut().map(|a| (a, ',')),
            ":path" => self.path.as_mut().map(|p| (p, '\n')),
            _ => None,
        };
        if let Some((first, sep)) = joined {
            first.push(sep);
            first.push_str(value);
            return false;
        }
        let slot = match &*lower {
            ":method" => Some(&mut self.method),
            ":authority" => Some(&mut self.authority),
            ":path" => Some(&mut self.path),
            APPROVAL_ID_HEADER => Some(&mut self.approval_id),
            JUSTIFICATION_HEADER => Some(&mut self.justification),
            REQUESTED_BY_HEADER => Some(&mut self.requested_by),
            CALLBACK_URL_HEADER => Some(&mut self.callback_url),
            REQUIRES_APPROVAL_HEADER => {
                if self.requires_approval.is_none() {
                    self.requires_approval = Some(value.trim().eq_ignore_ascii_case("true"));
                }
                None
            }
            _ => None,
        };
        let is_key = lower.eq_ignore_ascii_case(api_key_header);
        let strip = is_key || lower.starts_with(PAG0_HEADER_PREFIX);
        let slot = slot.filter(|s| s.is_none());
        if is_key && self.api_key.is_none() {
            // A key header that is also one of the names above (a configuration mistake) gets
            // a copy, so both read the value as before.
            self.api_key = Some(if slot.is_some() {
                value.clone()
            } else {
                take(value)
            });
        }
        let moved = slot.is_some();
        if let Some(s) = slot {
            *s = Some(take(value));
        }
        if strip && !self.strip.iter().any(|n| n == name) {
            self.strip.push(take(name));
        }
        !strip && !moved
    }
}

#[cfg(test)]
mod tests {
    use crate::host::MapType;

    use super::*;
    use crate::testing::FakeHost;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn take_from(headers: &[(&str, &str)], key: &str) -> (RequestHeaders, Vec<(String, String)>) {
        let host = FakeHost::default();
        *host.request_headers.borrow_mut() = pairs(headers);
        let h = &host;
        let s = Snapshot::read(&h, MapType::HttpRequestHeaders);
        let r = RequestHeaders::take(&s, key);
        (r, s.headers(MapType::HttpRequestHeaders))
    }

    #[test]
    fn one_pass_reads_first_values_and_collects_the_names_to_strip() {
        let (r, left) = take_from(
            &[
                (":method", "POST"),
                (":authority", "api.openai.com"),
                (":path", "/v1/chat?x=1"),
                ("X-My-Key", "k1"),
                ("x-my-key", "k2"),
                ("x-pag0-approval-id", "  apr_1  "),
                ("X-Pag0-Approval-Id", "apr_2"),
                ("x-pag0-requires-approval", " TRUE "),
                ("x-pag0-requires-approval", "false"),
                ("x-pag0-justification", "   "),
                ("x-pag0-Requested-By", "bot"),
                ("x-pag0-project", "p"),
                ("content-type", "application/json"),
                ("x-dup", "first"),
            ],
            "x-my-KEY",
        );
        assert_eq!(r.api_key.as_deref(), Some("k1"));
        assert!(r.requires_approval);
        assert_eq!(
            r.approval,
            Incoming {
                approval_id: Some("apr_1".into()),
                justification: None,
                requested_by: Some("bot".into()),
                callback_url: None,
                method: "POST".into(),
                authority: "api.openai.com".into(),
                path: "/v1/chat?x=1".into(),
                credential: None,
            }
        );
        assert_eq!(
            r.strip,
            [
                "X-My-Key",
                "x-my-key",
                "x-pag0-approval-id",
                "X-Pag0-Approval-Id",
                "x-pag0-requires-approval",
                "x-pag0-justification",
                "x-pag0-Requested-By",
                "x-pag0-project",
            ]
        );
        // What the snapshot still serves (the cache reads these).
        assert_eq!(
            left,
            pairs(&[("content-type", "application/json"), ("x-dup", "first")])
        );
    }

    #[test]
    fn a_second_authority_or_path_is_kept_so_the_request_is_refused() {
        // Through `Pass` directly: the fake host serves the first value of a repeated name.
        let mut pass = Pass::default();
        let mut kept = pairs(&[
            (":authority", "api.openai.com"),
            (":path", "/v1/chat"),
            (":authority", "suspicious-api.com"),
            (":path", "/v1/admin"),
            ("accept", "*/*"),
        ]);
        kept.retain_mut(|pair| pass.take(pair, "x-pag0-api-key"));
        let authority = pass.authority.unwrap_or_default();
        let path = pass.path.unwrap_or_default();
        assert_eq!(authority, "api.openai.com,suspicious-api.com");
        assert_eq!(path, "/v1/chat\n/v1/admin");
        assert!(pag0_policy::matching::parse_authority(&authority).is_err());
        assert!(pag0_policy::path::normalise(&path).is_err());
        assert_eq!(kept, pairs(&[("accept", "*/*")]));
    }

    #[test]
    fn missing_headers_and_a_key_header_that_is_also_read_for_the_request_line() {
        let (r, left) = take_from(&[(":path", "/a"), ("accept", "*/*")], ":path");
        assert_eq!(r.api_key.as_deref(), Some("/a"));
        assert_eq!(r.approval.path, "/a");
        assert_eq!(r.approval.method, "");
        assert!(!r.requires_approval);
        assert_eq!(r.strip, [":path"]);
        assert_eq!(left, pairs(&[("accept", "*/*")]));
    }
}

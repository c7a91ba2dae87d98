//! Binding an approval to one request (docs/policy.md#check-order-and-replies): an approval id is only valid for a replay of
//! the same request — same client, method, host, path (with query) and body.
//!
//! Both the filter (when it asks for an approval and when it sees a replay) and the sidecar
//! (when it stores and checks approvals) compute [`request_binding`], so they agree byte for
//! byte. The host is compared as the matcher sees it (lower-case, no port, no trailing dot);
//! the method is upper-cased; the path is taken as sent.

use sha2::{Digest, Sha256};

use crate::decide::RequestHead;
use crate::matching::request_host;

/// Lower-case hex SHA-256 of a request body.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Request headers that carry the upstream credential — who pays the upstream. An approval is
/// bound to their values: a replay with another credential is another request.
pub const CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// SHA-256 over the credential headers present (`(name, value)` pairs in the order of
/// [`CREDENTIAL_HEADERS`], first value of each, length-prefixed); `None` when there are none.
/// Only the hash is kept, never the credential.
pub fn credential_sha256(mut header: impl FnMut(&str) -> Option<String>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    let mut any = false;
    for name in CREDENTIAL_HEADERS {
        if let Some(v) = header(name) {
            any = true;
            for field in [name.as_bytes(), v.as_bytes()] {
                h.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
                h.update(field);
            }
        }
    }
    any.then(|| h.finalize().into())
}

/// Lower-case hex SHA-256 over the client id, method, host, path and the body's SHA-256,
/// each length-prefixed so no two different requests can share an encoding.
pub fn request_binding(client_id: &str, head: &RequestHead<'_>, body: &[u8]) -> String {
    request_binding_with_credential(client_id, head, body, None)
}

/// [`request_binding`] that also covers the upstream credential ([`credential_sha256`]):
/// with `Some`, a distinct domain tag and the credential hash as a sixth field; with `None`,
/// exactly [`request_binding`].
pub fn request_binding_with_credential(
    client_id: &str,
    head: &RequestHead<'_>,
    body: &[u8],
    credential: Option<&[u8; 32]>,
) -> String {
    let body_hash = Sha256::digest(body);
    let host = request_host(head.authority).to_ascii_lowercase();
    let method = head.method.to_ascii_uppercase();
    let mut h = Sha256::new();
    h.update(match credential {
        None => &b"pag0-approval-binding-v1"[..],
        Some(_) => &b"pag0-approval-binding-v2"[..],
    });
    let fields: [&[u8]; 5] = [
        client_id.as_bytes(),
        method.as_bytes(),
        host.as_bytes(),
        head.path.as_bytes(),
        &body_hash[..],
    ];
    for field in fields.into_iter().chain(credential.map(|c| &c[..])) {
        h.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// The canonical form of an e-mail address, for "is this the same person": parsed with the
/// `email_address` crate (RFC 5322 addr-spec, or a `Display Name <addr>` mailbox), then
/// lower-cased whole and without the trailing dot of a fully-qualified domain. So
/// `Agent E <Agent-E@X.com.>`, `agent-e@x.com.` and ` AGENT-E@x.COM ` are all
/// `agent-e@x.com`. `None` for anything that is not one address (empty, two addresses, no
/// `@`, a bare name): a requester that cannot be named cannot be told apart from an approver.
pub fn normalise_email(s: &str) -> Option<String> {
    use email_address::{EmailAddress, Options};
    let t = s.trim();
    if t.is_empty() || t.len() > 320 || t.contains(',') || t.contains(';') {
        return None;
    }
    // A bare `<addr>` is the address.
    let t = match t.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        Some(inner) => inner.trim(),
        None => t,
    };
    // `x.com.` names the same domain as `x.com` (DNS root label).
    let t = match t.strip_suffix(".>") {
        Some(inner) => format!("{}>", inner.trim_end_matches('.')),
        None => t.trim_end_matches('.').to_string(),
    };
    let parsed = EmailAddress::parse_with_options(&t, Options::default()).ok()?;
    let email = parsed.email();
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(format!("{local}@{}", domain.trim_end_matches('.')).to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a str, authority: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            api_key: None,
            method,
            authority,
            path,
            requires_approval: false,
        }
    }

    /// Issue 20 item 4: every spelling of the same address is the same person; what is not
    /// one address is refused (`None`).
    #[test]
    fn every_spelling_of_an_address_normalises_to_one() {
        for s in [
            "agent-e@x.com",
            "agent-e@x.com.",
            "Agent-E@X.COM",
            " agent-e@x.com ",
            "Agent E <agent-e@x.com>",
            "Agent E <agent-e@x.com.>",
            "\"Agent E\" <AGENT-E@x.com>",
            "<agent-e@x.com>",
        ] {
            assert_eq!(
                normalise_email(s).as_deref(),
                Some("agent-e@x.com"),
                "{s:?}"
            );
        }
        for s in [
            "",
            "   ",
            "agent-e",
            "Agent E",
            "@x.com",
            "agent-e@",
            "agent-e@x.com, lead@x.com",
            "agent-e@x.com; lead@x.com",
            "Agent E <agent-e@x.com",
            "agent e@x.com",
            "agent-e@@x.com",
        ] {
            assert_eq!(normalise_email(s), None, "{s:?}");
        }
    }

    proptest::proptest! {
        /// Never panics, and a normalised address is a fixed point.
        #[test]
        fn normalising_is_idempotent(s in ".{0,60}") {
            if let Some(n) = normalise_email(&s) {
                proptest::prop_assert_eq!(normalise_email(&n), Some(n.clone()));
            }
        }
    }

    #[test]
    fn same_request_same_binding() {
        let a = request_binding("c", &head("post", "API.openai.com:443", "/v1/chat"), b"{}");
        let b = request_binding("c", &head("POST", "api.openai.com", "/v1/chat"), b"{}");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn any_difference_changes_the_binding() {
        let base = request_binding("c", &head("POST", "h.com", "/p"), b"x");
        for other in [
            request_binding("d", &head("POST", "h.com", "/p"), b"x"),
            request_binding("c", &head("GET", "h.com", "/p"), b"x"),
            request_binding("c", &head("POST", "g.com", "/p"), b"x"),
            request_binding("c", &head("POST", "h.com", "/p?x=1"), b"x"),
            request_binding("c", &head("POST", "h.com", "/p"), b"y"),
            // Field boundaries are not ambiguous.
            request_binding("cP", &head("OST", "h.com", "/p"), b"x"),
        ] {
            assert_ne!(base, other);
        }
    }

    /// Issue 20: a replay with another upstream credential was accepted. The credential is
    /// part of the binding; without one the binding is what it always was.
    #[test]
    fn the_upstream_credential_is_bound() {
        let h = head("POST", "h.com", "/p");
        let cred = |pairs: &[(&str, &str)]| {
            credential_sha256(|n| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(cred(&[]), None);
        assert_eq!(cred(&[("x-other", "1")]), None);
        let a = cred(&[("authorization", "Bearer sk-a")]).unwrap();
        let b = cred(&[("authorization", "Bearer sk-b")]).unwrap();
        let c = cred(&[("x-api-key", "Bearer sk-a")]).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c, "the header name counts");
        let bind = |c: Option<&[u8; 32]>| request_binding_with_credential("c", &h, b"x", c);
        assert_eq!(bind(None), request_binding("c", &h, b"x"));
        assert_ne!(bind(Some(&a)), bind(Some(&b)));
        assert_ne!(bind(Some(&a)), bind(None));
        assert_eq!(bind(Some(&a)), bind(Some(&a)));
    }

    #[test]
    fn body_hash() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

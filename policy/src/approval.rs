//! Binding an approval to one request (SPEC §5): an approval id is only valid for a replay of
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

/// Lower-case hex SHA-256 over the client id, method, host, path and the body's SHA-256,
/// each length-prefixed so no two different requests can share an encoding.
pub fn request_binding(client_id: &str, head: &RequestHead<'_>, body: &[u8]) -> String {
    let body_hash = Sha256::digest(body);
    let host = request_host(head.authority).to_ascii_lowercase();
    let method = head.method.to_ascii_uppercase();
    let mut h = Sha256::new();
    h.update(b"pag0-approval-binding-v1");
    for field in [
        client_id.as_bytes(),
        method.as_bytes(),
        host.as_bytes(),
        head.path.as_bytes(),
        &body_hash[..],
    ] {
        h.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
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

    #[test]
    fn body_hash() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

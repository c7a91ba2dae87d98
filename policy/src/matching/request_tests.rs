//! Issue 20 item 1 through `check_head`: every listed spelling, and its class, gets the right
//! code before any rule can be defeated.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::decide::{DenyCode, HeadOutcome, RequestHead};
use crate::validate::{api_key_sha256_hex, CompiledPolicy};

fn policy() -> CompiledPolicy {
    CompiledPolicy::from_value(&json!({
      "orgId": "acme-corp",
      "globalPolicy": { "blockedEndpoints": ["api.openai.com/v1/admin"] },
      "endpoints": [
        { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "1000" } }
      ],
      "projects": [ { "id": "p", "name": "P", "policy": {} } ],
      "clients": [
        { "id": "any-path", "projectId": "p", "apiKeySha256": api_key_sha256_hex("sk-any"),
          "additionalRestrictions": { "allowedEndpoints": ["api.openai.com"] } },
        { "id": "chat-only", "projectId": "p", "apiKeySha256": api_key_sha256_hex("sk-chat"),
          "additionalRestrictions": { "allowedEndpoints": ["api.openai.com/v1/chat"] } }
      ]
    }))
    .unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The code `check_head` answers, or `None` when the request passes the head checks.
fn code(p: &CompiledPolicy, key: &str, authority: &str, path: &str) -> Option<DenyCode> {
    let head = RequestHead {
        api_key: Some(key),
        method: "POST",
        authority,
        path,
        requires_approval: false,
    };
    match p.check_head(&head, now()) {
        HeadOutcome::Deny(d) => {
            assert_eq!(d.project_id.as_deref(), Some("p"), "{d:?}");
            assert!(!d.message.is_empty());
            Some(d.code)
        }
        HeadOutcome::Continue(_) => None,
    }
}

#[test]
fn the_issue_spellings_of_a_blocked_path_are_blocked() {
    let p = policy();
    for path in [
        "/v1/admin",
        "/v1/%61dmin",
        "/%761/admin",
        "/V1/ADMIN",
        "/v1//admin/x",
        "/v1/./admin",
        "/x/../v1/Admin?q",
    ] {
        assert_eq!(
            code(&p, "sk-any", "api.openai.com", path),
            Some(DenyCode::EndpointBlocked),
            "{path}"
        );
    }
    // The same client may call the rest of the host.
    assert_eq!(
        code(&p, "sk-any", "api.openai.com", "/v1/chat/completions"),
        None
    );
    assert_eq!(
        code(&p, "sk-any", "api.openai.com", "/v1/administrator"),
        None
    );
}

#[test]
fn ambiguous_paths_are_refused_with_a_400_code() {
    let p = policy();
    for path in [
        "/v1/admin;x=1",
        "/v1/chat/..;/admin",
        "/v1%2Fadmin",
        "/v1%5cadmin",
        "/v1\\admin",
        "/v1/admin%00",
        "/v1/%ff",
        "/v1/%zz",
        "/v1/%2561dmin",
        "v1/admin",
    ] {
        for key in ["sk-any", "sk-chat"] {
            assert_eq!(
                code(&p, key, "api.openai.com", path),
                Some(DenyCode::AmbiguousPath),
                "{path}"
            );
        }
    }
    assert_eq!(DenyCode::AmbiguousPath.status(), 400);
}

#[test]
fn an_allow_rule_with_a_path_does_not_let_other_paths_through() {
    let p = policy();
    assert_eq!(
        code(&p, "sk-chat", "api.openai.com", "/v1/chat/completions"),
        None
    );
    assert_eq!(
        code(
            &p,
            "sk-chat",
            "api.openai.com",
            "//v1/%63hat/./completions?x=../a"
        ),
        None
    );
    for path in [
        "/v1/chat/../embeddings",
        "/v1/embeddings/../chat",
        "/V1/CHAT",
        "/v1/chatter",
        "/",
    ] {
        assert_eq!(
            code(&p, "sk-chat", "api.openai.com", path),
            Some(DenyCode::EndpointNotAllowed),
            "{path}"
        );
    }
    // Blocked wins over allowed, whatever the spelling.
    assert_eq!(
        code(&p, "sk-chat", "api.openai.com", "/v1/chat/../ADMIN"),
        Some(DenyCode::EndpointBlocked)
    );
}

#[test]
fn an_authority_that_is_not_one_host_is_refused_before_any_rule() {
    let p = policy();
    for authority in [
        "api.openai.com,api.openai.com",
        "api.openai.com, suspicious.com",
        "user@api.openai.com",
        "api.openai.com;",
        "api.openai.com:80:80",
        "api.openai.com%2e",
        "",
        "api.openai.com:99999",
        "api.openai.com:",
    ] {
        for key in ["sk-any", "sk-chat"] {
            assert_eq!(
                code(&p, key, authority, "/v1/chat"),
                Some(DenyCode::InvalidAuthority),
                "{authority:?}"
            );
        }
    }
    assert_eq!(DenyCode::InvalidAuthority.status(), 400);
    // One host, with a port or a trailing dot, is fine.
    assert_eq!(code(&p, "sk-chat", "API.openai.com.:443", "/v1/chat"), None);
    // The key is checked first: no key, no detail about the request.
    let head = RequestHead {
        api_key: None,
        method: "GET",
        authority: "a,b",
        path: ";",
        requires_approval: false,
    };
    assert!(
        matches!(p.check_head(&head, now()), HeadOutcome::Deny(d) if d.code == DenyCode::MissingApiKey)
    );
}

#[test]
fn the_new_codes_have_their_wire_json() {
    let p = policy();
    let head = RequestHead {
        api_key: Some("sk-any"),
        method: "GET",
        authority: "api.openai.com",
        path: "/v1/admin;x",
        requires_approval: false,
    };
    let HeadOutcome::Deny(d) = p.check_head(&head, now()) else {
        panic!("not denied")
    };
    let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(v["error"]["code"], "AMBIGUOUS_PATH");
    assert_eq!(v["error"]["projectId"], "p");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("path parameter"),
        "{v}"
    );
    let long = format!("{}.com", "a,".repeat(1000));
    let head = RequestHead {
        authority: &long,
        path: "/",
        ..head
    };
    let HeadOutcome::Deny(d) = p.check_head(&head, now()) else {
        panic!("not denied")
    };
    assert_eq!(d.code.as_str(), "INVALID_AUTHORITY");
    assert!(
        d.message.len() < 600,
        "the message is bounded: {}",
        d.message.len()
    );
}

use super::*;

fn pat(s: &str) -> EndpointPattern {
    EndpointPattern::parse(s).unwrap()
}

#[test]
fn host_matches_itself_and_subdomains_only() {
    let p = pat("example.com");
    assert!(p.matches("example.com", "/", false));
    assert!(p.matches("api.example.com", "/", false));
    assert!(p.matches("a.b.example.com", "/x", false));
    assert!(!p.matches("badexample.com", "/", false));
    assert!(!p.matches("example.com.evil.net", "/", false));
    assert!(!p.matches("xample.com", "/", false));
    assert!(!p.matches("com", "/", false));
}

#[test]
fn ports_case_and_trailing_dot_are_ignored() {
    let p = pat("API.OpenAI.com:443");
    assert_eq!(p.host(), "api.openai.com");
    assert!(p.matches("api.openai.com:8443", "/", false));
    assert!(p.matches("Api.OPENAI.Com", "/", false));
    assert!(p.matches("api.openai.com.", "/", false));
    assert!(p.matches("eu.api.openai.com.:80", "/", false));
    assert_eq!(parse_authority("[::1]:8080"), Ok("::1"));
    assert_eq!(parse_authority("host:80"), Ok("host"));
    assert_eq!(parse_authority("Host.Example."), Ok("Host.Example"));
    assert_eq!(parse_authority("10.0.0.1:65535"), Ok("10.0.0.1"));
    assert_eq!(request_host("[::1]:8080"), "::1");
}

#[test]
fn an_authority_that_is_not_one_host_is_refused() {
    use AuthorityError::*;
    for (a, want) in [
        ("", Empty),
        ("api.openai.com,api.openai.com", BadHost),
        ("api.openai.com, evil.com", BadHost),
        ("user@api.openai.com", BadHost),
        ("api.openai.com;", BadHost),
        ("api.openai.com:80:80", BadHost),
        ("api.openai.com%2e", BadHost),
        ("api.openai.com:", BadPort),
        ("api.openai.com:http", BadPort),
        ("api.openai.com:65536", BadPort),
        ("api.openai.com:000443", BadPort),
        ("api..openai.com", BadHost),
        (".", BadHost),
        (" api.openai.com", BadHost),
        ("api.openai.com/", BadHost),
        ("::1", BadHost),
        ("[::1", BadHost),
        ("[not-v6]", BadHost),
        ("[::1]x", BadHost),
        ("[::1]:99999", BadPort),
    ] {
        assert_eq!(parse_authority(a), Err(want), "{a:?}");
    }
}

#[test]
fn path_prefix_on_whole_segments() {
    let p = pat("api.openai.com/v1/chat");
    assert!(p.has_path());
    assert!(p.matches("api.openai.com", "/v1/chat", false));
    assert!(p.matches("api.openai.com", "/v1/chat/", false));
    assert!(p.matches("api.openai.com", "/v1/chat/completions", false));
    assert!(p.matches("api.openai.com", "/v1/chat?x=1", false));
    assert!(p.matches("api.openai.com", "//v1//chat/completions", false));
    assert!(!p.matches("api.openai.com", "/v1/chatter", false));
    assert!(!p.matches("api.openai.com", "/v1", false));
    assert!(!p.matches("api.openai.com", "/v2/chat", false));
    assert!(!p.matches("api.openai.com", "/v1/embeddings?p=/v1/chat", false));
    assert!(!p.matches("other.com", "/v1/chat", false));
}

#[test]
fn rules_match_the_normalised_path() {
    let admin = pat("api.openai.com/v1/admin");
    for path in [
        "/v1/%61dmin",
        "/%761/admin",
        "/v1//admin",
        "/v1/adm%69n/x?y",
    ] {
        assert!(admin.matches("api.openai.com", path, true), "block {path}");
        assert!(admin.matches("api.openai.com", path, false), "allow {path}");
    }
    // With dot segments: blocked; allowed only if the path as written is under the rule too.
    for path in ["/v1/./admin", "/x/../v1/admin"] {
        assert!(admin.matches("api.openai.com", path, true), "block {path}");
        assert!(
            !admin.matches("api.openai.com", path, false),
            "allow {path}"
        );
    }
    assert!(admin.matches("api.openai.com", "/v1/admin/./x", false));
    // Block rules ignore letter case, allow rules do not.
    assert!(admin.matches("api.openai.com", "/V1/ADMIN", true));
    assert!(admin.matches("api.openai.com", "/v1/Admin/users", true));
    assert!(!admin.matches("api.openai.com", "/V1/ADMIN", false));
    assert!(!admin.matches("api.openai.com", "/v1/administrator", true));
    // Rule paths are normalised too.
    assert!(pat("h.com/v1/%61dmin").matches("h.com", "/v1/admin", false));
    assert_eq!(pat("h.com/v1/%61dmin/./x").to_string(), "h.com/v1/admin/x");
}

#[test]
fn dot_segments_are_matched_both_ways_fail_closed() {
    let chat = pat("api.openai.com/v1/chat");
    // Resolves out of the allowed prefix: not allowed.
    assert!(!chat.matches("api.openai.com", "/v1/chat/../admin", false));
    // Resolves into it, but as written it is under /v1/admin: not allowed either.
    assert!(!chat.matches("api.openai.com", "/v1/admin/../chat", false));
    assert!(chat.matches("api.openai.com", "/v1/chat/./completions", false));
    let admin = pat("api.openai.com/v1/admin");
    // Blocked as written, even though it resolves elsewhere.
    assert!(admin.matches("api.openai.com", "/v1/admin/../chat", true));
    assert!(admin.matches("api.openai.com", "/v1/chat/../admin", true));
    assert!(!admin.matches("api.openai.com", "/v1/chat/./completions", true));
}

#[test]
fn refused_targets_match_every_block_rule_and_no_other() {
    let chat = pat("api.openai.com/v1/chat");
    for (authority, path) in [
        ("api.openai.com", "/v1/chat/..;/admin"),
        ("api.openai.com", "/v1/chat%2Fx"),
        ("api.openai.com", "/v1\\chat"),
        ("api.openai.com,evil.com", "/v1/chat"),
        ("user@api.openai.com", "/v1/chat"),
    ] {
        assert!(
            !chat.matches(authority, path, false),
            "allow {authority} {path}"
        );
        assert!(
            chat.matches(authority, path, true),
            "block {authority} {path}"
        );
        assert!(RequestTarget::parse(authority, path).is_err());
    }
    // A host-only rule sees the normalised path too.
    assert!(pat("api.openai.com").matches("api.openai.com", "/../x", false));
}

#[test]
fn bad_patterns_are_rejected() {
    assert_eq!(EndpointPattern::parse(""), Err(PatternError::Empty));
    assert!(matches!(
        EndpointPattern::parse("https://api.openai.com"),
        Err(PatternError::Scheme(_))
    ));
    assert!(matches!(
        EndpointPattern::parse("*.openai.com"),
        Err(PatternError::Wildcard(_))
    ));
    assert!(matches!(
        EndpointPattern::parse("api..com"),
        Err(PatternError::BadHost(_))
    ));
    assert!(matches!(
        EndpointPattern::parse("a b.com"),
        Err(PatternError::BadHost(_))
    ));
    assert!(matches!(
        EndpointPattern::parse("a.com/v1;x"),
        Err(PatternError::BadPath(_, PathError::PathParameter))
    ));
}

#[test]
fn display_and_specificity() {
    assert_eq!(
        pat("Api.X.com:80/v1//chat").to_string(),
        "api.x.com/v1/chat"
    );
    assert!(pat("a.example.com").specificity() > pat("example.com").specificity());
    assert!(pat("example.com/v1").specificity() > pat("example.com").specificity());
}

/// Spells `path` (lower-case segments of unreserved characters) differently without changing
/// what it means to a normalising upstream: random letter case, random percent-encoding of
/// characters, inserted `./` and `x/../` segments, doubled slashes, a query.
fn respell(path: &str, k: &[u8]) -> String {
    let mut out = String::new();
    let mut pick = k.iter().copied().cycle();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let r = pick.next().unwrap_or(0);
        out.push('/');
        if r & 1 != 0 {
            out.push('/');
        }
        if r & 2 != 0 {
            out.push_str("./");
        }
        if r & 4 != 0 {
            out.push_str("zz/../");
        }
        for c in seg.bytes() {
            let r = pick.next().unwrap_or(0);
            let c = if r & 1 != 0 {
                c.to_ascii_uppercase()
            } else {
                c
            };
            match r % 6 {
                2 => out.push_str(&format!("%{c:02X}")),
                3 => out.push_str(&format!("%{c:02x}")),
                _ => out.push(char::from(c)),
            }
        }
    }
    if k.first().is_some_and(|r| r & 8 != 0) {
        out.push_str("?q=1");
    }
    out
}

proptest::proptest! {
    #[test]
    fn every_spelling_of_a_blocked_path_is_blocked_or_refused(
        segs in proptest::collection::vec("[a-z0-9_~-]{1,6}", 1..4),
        tail in proptest::collection::vec("[a-z0-9]{1,4}", 0..3),
        k in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..32),
    ) {
        let rule = format!("api.example.com/{}", segs.join("/"));
        let blocked = pat(&rule);
        let path = format!("/{}", segs.iter().chain(&tail).cloned().collect::<Vec<_>>().join("/"));
        let spelled = respell(&path, &k);
        proptest::prop_assert!(blocked.matches("api.example.com", &spelled, true), "{} not blocked by {}", spelled, rule);
        // The allow direction never lets what is refused through.
        if RequestTarget::parse("api.example.com", &spelled).is_err() {
            proptest::prop_assert!(!blocked.matches("api.example.com", &spelled, false));
        }
    }

    #[test]
    fn a_refused_or_blocked_path_never_reaches_an_allow_only(
        path in "/[a-zA-Z%0-9./;\\\\]{0,24}",
    ) {
        // A request matched by the allow rule `/v1/chat` is, once normalised, under /v1/chat.
        let chat = pat("api.example.com/v1/chat");
        if chat.matches("api.example.com", &path, false) {
            let t = RequestTarget::parse("api.example.com", &path).unwrap();
            proptest::prop_assert!(t.path().starts_with("/v1/chat"), "{} -> {}", path, t.path());
        }
    }
}

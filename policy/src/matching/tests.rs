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
    assert_eq!(request_host("[::1]:8080"), "::1");
    assert_eq!(request_host("host:80"), "host");
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
fn ambiguous_paths_fail_closed_both_ways() {
    let p = pat("api.openai.com/v1/chat");
    for path in [
        "/v1/chat/../embeddings",
        "/v1/chat/./x",
        "/v1/chat/%2e%2e/x",
        "/v1/chat%2Fx",
        "/v1\\chat",
    ] {
        assert!(!p.matches("api.openai.com", path, false), "allow {path}");
        assert!(p.matches("api.openai.com", path, true), "block {path}");
    }
    // A host-only rule is unaffected by path tricks.
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

/// The three-pass classification `classify` replaced: the oracle for the one-pass version.
fn classify_by_windows(path: &str) -> PathClass {
    if path.contains('\\') {
        return PathClass::Ambiguous;
    }
    let lower_has = |needle: &str| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if lower_has("%2e") || lower_has("%2f") || lower_has("%5c") {
        return PathClass::Ambiguous;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return PathClass::Ambiguous;
    }
    PathClass::Plain
}

#[test]
fn percent_encodings_at_the_end_and_in_either_case() {
    for (path, ambiguous) in [
        ("/a%2E", true),
        ("/a%2f", true),
        ("/a%5C", true),
        ("/a%2", false),
        ("/a%", false),
        ("/a%25", false),
        ("/a%e2%80%a6", false),
        ("/%%2e", true),
    ] {
        assert_eq!(classify(path) == PathClass::Ambiguous, ambiguous, "{path}");
    }
}

proptest::proptest! {
    #[test]
    fn one_pass_classify_agrees_with_the_windows(path in "[/a.%25cCeEfF\\\\]{0,24}") {
        proptest::prop_assert_eq!(classify(&path), classify_by_windows(&path));
    }
}

use proptest::prelude::*;

use super::*;

fn n(p: &str) -> String {
    normalise_str(p).unwrap_or_else(|e| panic!("{p:?} refused: {e}"))
}

#[test]
fn unreserved_escapes_are_decoded_and_others_canonicalised() {
    assert_eq!(n("/v1/%61dmin"), "/v1/admin");
    assert_eq!(n("/%761/admin"), "/v1/admin");
    assert_eq!(n("/%7E%2d%5F%2E%41"), "/~-_.A");
    assert_eq!(n("/caf%c3%a9"), "/caf%C3%A9");
    assert_eq!(n("/café"), "/caf%C3%A9");
    assert_eq!(n("/a%20b%3a%40"), "/a%20b%3A%40");
    assert_eq!(n("/100%25"), "/100%25");
    assert_eq!(n("/a b"), "/a%20b");
}

#[test]
fn slashes_merge_and_dot_segments_resolve() {
    assert_eq!(n("//v1///chat"), "/v1/chat");
    assert_eq!(n("/v1/chat/"), "/v1/chat/");
    assert_eq!(n("/v1/./chat"), "/v1/chat");
    assert_eq!(n("/v1/chat/../admin"), "/v1/admin");
    assert_eq!(n("/v1/x/.."), "/v1/");
    assert_eq!(n("/v1/x/."), "/v1/x/");
    assert_eq!(n("/../../v1/admin"), "/v1/admin");
    assert_eq!(n("/v1/chat/%2e%2e/admin"), "/v1/admin");
    assert_eq!(n("/v1/chat/.%2E/admin"), "/v1/admin");
    assert_eq!(n("/"), "/");
    assert_eq!(n("/.."), "/");
    // `...` is a name, not a dot segment.
    assert_eq!(n("/a/.../b"), "/a/.../b");
}

#[test]
fn query_and_fragment_are_not_part_of_the_path() {
    assert_eq!(n("/v1/chat?x=/../admin;%2F"), "/v1/chat");
    assert_eq!(n("/v1/chat#frag"), "/v1/chat");
    assert_eq!(n("/v1/%61dmin?"), "/v1/admin");
}

#[test]
fn literal_segments_are_kept_only_when_there_were_dots() {
    let p = normalise("/v1//admin/../chat").unwrap();
    assert_eq!(p.segments, ["v1", "chat"]);
    assert_eq!(
        p.literal.as_deref(),
        Some(&["v1".to_string(), "admin".into(), "..".into(), "chat".into()][..])
    );
    assert_eq!(normalise("/v1/%61dmin").unwrap().literal, None);
}

#[test]
fn ambiguous_spellings_are_refused_with_their_reason() {
    use PathError::*;
    for (path, want) in [
        ("/v1/admin;x=1", PathParameter),
        ("/v1/chat/..;/admin", PathParameter),
        ("/v1/admin%3bx", PathParameter),
        ("/v1%2Fadmin", EncodedSeparator),
        ("/v1%2fadmin", EncodedSeparator),
        ("/v1%5Cadmin", EncodedSeparator),
        ("/v1\\admin", Backslash),
        ("/v1/admin\0", Control),
        ("/v1/admin%00", Control),
        ("/v1/ad\tmin", Control),
        ("/v1/%0a", Control),
        ("/v1/%7f", Control),
        ("/v1/%ff", NotUtf8),
        ("/v1/%c3", NotUtf8),
        ("/v1/%c3%28", NotUtf8),
        ("/v1/%e9t%c3%a9", NotUtf8),
        ("/v1/%", BadEscape),
        ("/v1/%4", BadEscape),
        ("/v1/%zz", BadEscape),
        ("/v1/%%34%31", BadEscape),
        ("/v1/%2561dmin", DoubleEncoding),
        ("/v1/%25%36%31dmin", DoubleEncoding),
        ("v1/admin", NotAbsolute),
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("http://h/v1/admin", NotAbsolute),
    ] {
        assert_eq!(normalise(path), Err(want), "{path:?}");
    }
}

/// Spells one segment differently without changing what it means: each unreserved byte
/// may be percent-encoded (either hex case) and each letter's case flipped (`flip`).
fn respell(seg: &str, choices: &[u8], flip: bool) -> String {
    let mut out = String::new();
    for (i, c) in seg.bytes().enumerate() {
        let k = choices.get(i % choices.len().max(1)).copied().unwrap_or(0);
        let c = if flip && k & 4 != 0 {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        } else {
            c
        };
        match k % 4 {
            1 => out.push_str(&format!("%{c:02X}")),
            2 => out.push_str(&format!("%{c:02x}")),
            _ => out.push(char::from(c)),
        }
    }
    out
}

/// Paths built from the characters that matter to the grammar.
fn path_strategy() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9._~%/;\\\\:@!$ \\-]{0,40}"
}

proptest! {
    #[test]
    fn normalise_is_idempotent_and_clean(path in path_strategy()) {
        if let Ok(once) = normalise_str(&path) {
            prop_assert!(!once.contains("//"), "{once}");
            prop_assert!(!once.contains("/./") && !once.ends_with("/."), "{once}");
            prop_assert!(!once.contains("/../") && !once.ends_with("/.."), "{once}");
            prop_assert_eq!(normalise_str(&once), Ok(once.clone()));
        }
    }

    #[test]
    fn normalise_is_idempotent_on_any_text(path in "/\\PC{0,30}") {
        if let Ok(once) = normalise_str(&path) {
            prop_assert_eq!(normalise_str(&once), Ok(once.clone()));
        }
    }

    #[test]
    fn equivalent_spellings_normalise_alike(
        segs in prop::collection::vec("[a-z0-9._~-]{1,8}", 1..5),
        choices in prop::collection::vec(0u8..8, 1..16),
        extra_slashes in prop::collection::vec(0usize..3, 5),
        dot in prop::option::of(0usize..5),
    ) {
        let canonical = format!("/{}", segs.join("/"));
        let Ok(want) = normalise_str(&canonical) else { return Ok(()) };
        let mut spelled = String::new();
        for (i, s) in segs.iter().enumerate() {
            spelled.push_str(&"/".repeat(1 + extra_slashes.get(i).copied().unwrap_or(0)));
            if dot == Some(i) {
                spelled.push_str("./");
            }
            spelled.push_str(&respell(s, &choices, false));
        }
        prop_assert_eq!(normalise_str(&spelled), Ok(want));
    }
}

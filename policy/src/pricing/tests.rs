use super::*;

fn price(i: u64, o: u64) -> ModelPrice {
    ModelPrice {
        input_per_1k: Micros::new(i),
        output_per_1k: Micros::new(o),
    }
}

fn openai() -> TokenPricing {
    TokenPricing::new(
        vec![
            ("gpt-4".into(), price(30_000, 60_000)),
            ("gpt-4o-mini".into(), price(150, 600)),
        ],
        Some("gpt-4".into()),
        None,
    )
}

#[test]
fn parse_body_reads_model_tokens_stream() {
    let f = parse_request_body(br#"{"model":"gpt-4","max_tokens":2000,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    assert_eq!(f.model.as_deref(), Some("gpt-4"));
    assert_eq!(f.max_tokens, Some(2000));
    assert!(f.stream);
    let f = parse_request_body(br#"{"max_completion_tokens":7}"#).unwrap();
    assert_eq!(f.max_tokens, Some(7));
    let f = parse_request_body(br#"{"max_tokens":5,"max_completion_tokens":9}"#).unwrap();
    assert_eq!(f.max_tokens, Some(9));
    let f = parse_request_body(br#"{"max_tokens":null}"#).unwrap();
    assert_eq!(f.max_tokens, None);
}

#[test]
fn empty_body_means_no_facts() {
    let f = parse_request_body(b"").unwrap();
    assert_eq!(f, BodyFacts::default());
    let f = parse_request_body(b"  \n").unwrap();
    assert_eq!(f.model, None);
    assert_eq!(f.body_len, 3);
}

#[test]
fn bad_bodies_are_errors() {
    assert!(matches!(
        parse_request_body(b"[1,2]"),
        Err(BodyError::NotAnObject)
    ));
    assert!(matches!(
        parse_request_body(b"hello"),
        Err(BodyError::NotAnObject)
    ));
    assert!(matches!(
        parse_request_body(b"{\"model\":"),
        Err(BodyError::Json(_))
    ));
    assert!(matches!(
        parse_request_body(br#"{"max_tokens":-1}"#),
        Err(BodyError::Json(_))
    ));
    assert!(matches!(
        parse_request_body(br#"{"max_tokens":"2000"}"#),
        Err(BodyError::Json(_))
    ));
    assert!(matches!(
        parse_request_body(br#"{"model":3}"#),
        Err(BodyError::Json(_))
    ));
}

#[test]
fn seed_example_gpt4_2000_tokens_is_twelve_cents_of_output() {
    // Output part alone: 60000 × 2000 / 1000 = 120000 micro-USD (the seed's "~$0.12").
    assert_eq!(
        token_cost(price(30_000, 60_000), 0, 2000),
        Ok(Micros::new(120_000))
    );
    let facts = BodyFacts {
        model: Some("gpt-4".into()),
        max_tokens: Some(2000),
        stream: false,
        body_len: 400,
        ..BodyFacts::default()
    };
    // input: ceil(400/4)=100 tokens → 3000; output 120000.
    assert_eq!(
        openai().estimate(Some(&facts)).unwrap().cost,
        Micros::new(123_000)
    );
}

#[test]
fn rounding_is_up_per_part() {
    // 1 token at 150/1k = 0.15 → 1; 1 token at 600/1k = 0.6 → 1.
    assert_eq!(token_cost(price(150, 600), 1, 1), Ok(Micros::new(2)));
    assert_eq!(estimate_input_tokens(0), 0);
    assert_eq!(estimate_input_tokens(1), 1);
    assert_eq!(estimate_input_tokens(4), 1);
    assert_eq!(estimate_input_tokens(5), 2);
}

#[test]
fn defaults_and_unknown_models() {
    let t = openai();
    // No model: defaultModel (gpt-4); no max_tokens: 1024.
    let est = t.estimate(None).unwrap();
    assert_eq!(est.cost, Micros::new(61_440));
    assert_eq!(est.model_price, Some(price(30_000, 60_000)));
    // Known cheap model.
    let f = BodyFacts {
        model: Some("gpt-4o-mini".into()),
        max_tokens: Some(1000),
        ..BodyFacts::default()
    };
    assert_eq!(t.estimate(Some(&f)).unwrap().cost, Micros::new(600));
    // Unknown model: priced as the most expensive (max input, max output).
    let mixed = TokenPricing::new(
        vec![("a".into(), price(100, 1)), ("b".into(), price(1, 200))],
        None,
        Some(10),
    );
    assert_eq!(mixed.price_of(Some("zzz")), price(100, 200));
    assert_eq!(mixed.price_of(None), price(100, 200));
    assert_eq!(mixed.price_of(Some("a")), price(100, 1));
    assert_eq!(mixed.estimate(None).unwrap().cost, Micros::new(2)); // 0 in + ceil(200*10/1000)
}

#[test]
fn overflow_is_an_error() {
    let f = BodyFacts {
        max_tokens: Some(u64::MAX),
        ..BodyFacts::default()
    };
    assert_eq!(openai().estimate(Some(&f)), Err(MoneyError::Overflow));
}

#[test]
fn endpoint_pricing_kinds() {
    assert!(!EndpointPricing::Free.needs_body());
    assert!(!EndpointPricing::PerRequest(Micros::new(5)).needs_body());
    assert!(EndpointPricing::Tokens(openai()).needs_body());
    assert_eq!(
        EndpointPricing::Free.estimate(None).unwrap().cost,
        Micros::ZERO
    );
    assert_eq!(
        EndpointPricing::PerRequest(Micros::new(2000))
            .estimate(None)
            .unwrap()
            .cost,
        Micros::new(2000)
    );
}

#[test]
fn every_output_limit_field_counts_and_the_largest_wins() {
    for (body, want) in [
        (&br#"{"max_output_tokens":700}"#[..], Some(700)),
        (
            br#"{"max_tokens":5,"max_output_tokens":900,"max_completion_tokens":9}"#,
            Some(900),
        ),
        (br#"{"max_tokens":50,"max_output_tokens":9}"#, Some(50)),
        (br#"{"model":"gpt-4"}"#, None),
    ] {
        assert_eq!(
            parse_request_body(body).unwrap().max_tokens,
            want,
            "{body:?}"
        );
    }
}

#[test]
fn choices_multiply_the_output_allowance() {
    let t = openai();
    let cost = |body: &[u8]| {
        let f = parse_request_body(body).unwrap();
        t.estimate(Some(&f)).unwrap().cost.get()
    };
    let input = |body: &[u8]| 30_000 * estimate_input_tokens(body.len()) / 1000;
    // The issue's request: 700 output tokens × 128 choices at 60000/1k.
    let b = br#"{"model":"gpt-4","max_tokens":700,"n":128}"#;
    assert_eq!(cost(b), 60_000 * 700 * 128 / 1000 + input(b));
    // best_of bills every candidate; the larger of n and best_of counts.
    let b = br#"{"model":"gpt-4","max_tokens":100,"n":2,"best_of":5}"#;
    assert_eq!(cost(b), 60_000 * 100 * 5 / 1000 + input(b));
    let b = br#"{"model":"gpt-4","max_tokens":100,"n":7,"best_of":3}"#;
    assert_eq!(cost(b), 60_000 * 100 * 7 / 1000 + input(b));
    // n: 0 and n: 1 are one choice; no output limit → defaultMaxTokens × n.
    let b = br#"{"model":"gpt-4","max_tokens":100,"n":0}"#;
    assert_eq!(cost(b), 6_000 + input(b));
    let b = br#"{"model":"gpt-4","n":3}"#;
    assert_eq!(cost(b), 60_000 * 1024 * 3 / 1000 + input(b));
    // Responses API field, times n.
    let b = br#"{"model":"gpt-4","max_output_tokens":10,"n":4}"#;
    assert_eq!(cost(b), 2_400 + input(b));
}

#[test]
fn choices_that_overflow_or_are_not_counts_are_errors() {
    let f = parse_request_body(br#"{"max_tokens":4294967296,"n":4294967296}"#).unwrap();
    assert_eq!(openai().estimate(Some(&f)), Err(MoneyError::Overflow));
    for body in [
        &br#"{"n":-1}"#[..],
        br#"{"n":"128"}"#,
        br#"{"n":1.5}"#,
        br#"{"best_of":null,"n":[2]}"#,
        br#"{"max_output_tokens":-5}"#,
        br#"{"n":2,"n":200}"#,
    ] {
        assert!(parse_request_body(body).is_err(), "{body:?}");
    }
}

proptest::proptest! {
    /// The estimate never falls when a request asks for more: more choices or more output
    /// tokens per choice cannot make a request look cheaper.
    #[test]
    fn estimate_is_monotone_in_choices_and_tokens(
        tokens in 0u64..100_000, n in 0u64..1000, extra_n in 0u64..1000, extra_t in 0u64..100_000,
    ) {
        let t = openai();
        let est = |tok: u64, n: u64| {
            let body = format!(r#"{{"model":"gpt-4","max_tokens":{tok},"n":{n}}}"#);
            let f = parse_request_body(body.as_bytes()).unwrap();
            let output = 60_000u128 * u128::from(tok) * u128::from(n.max(1));
            (t.estimate(Some(&f)).unwrap().cost.get(), output.div_ceil(1000))
        };
        let (a, out_a) = est(tokens, n);
        let (b, _) = est(tokens + extra_t, n + extra_n);
        proptest::prop_assert!(u128::from(a) >= out_a);
        // The longer body of b adds input; the output part alone already dominates.
        proptest::prop_assert!(b + 1_000 >= a);
    }
}

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

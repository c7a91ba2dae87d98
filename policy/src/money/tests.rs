use proptest::prelude::*;

use super::*;

#[test]
fn parse_and_json_forms() {
    assert_eq!(Micros::parse("100000000"), Ok(Micros::new(100_000_000)));
    assert_eq!(Micros::parse(" 7 "), Ok(Micros::new(7)));
    assert!(matches!(
        Micros::parse("12x"),
        Err(MoneyError::NotAnAmount(_))
    ));
    assert!(matches!(
        Micros::parse("-1"),
        Err(MoneyError::NotAnAmount(_))
    ));
    assert!(matches!(
        Micros::parse("1.5"),
        Err(MoneyError::NotAnAmount(_))
    ));
    assert!(matches!(Micros::parse(""), Err(MoneyError::NotAnAmount(_))));
    assert_eq!(
        Micros::parse("18446744073709551616"),
        Err(MoneyError::Overflow)
    );
    assert_eq!(Micros::from_json(&serde_json::json!(5)), Ok(Micros::new(5)));
    assert!(Micros::from_json(&serde_json::json!(-5)).is_err());
    assert!(Micros::from_json(&serde_json::json!(1.5)).is_err());
    assert!(Micros::from_json(&serde_json::json!(null)).is_err());
    assert_eq!(
        MoneyError::NotAnAmount("12x".into())
            .to_string()
            .split(" (")
            .next(),
        Some("\"12x\" is not a money amount")
    );
}

#[test]
fn serde_uses_strings_out_and_accepts_both_in() {
    assert_eq!(serde_json::to_string(&Micros::new(42)).unwrap(), "\"42\"");
    assert_eq!(
        serde_json::from_str::<Micros>("\"42\"").unwrap(),
        Micros::new(42)
    );
    assert_eq!(
        serde_json::from_str::<Micros>("42").unwrap(),
        Micros::new(42)
    );
    assert!(serde_json::from_str::<Micros>("\"4 2\"").is_err());
}

#[test]
fn mul_div_ceil_rounds_up_and_checks() {
    assert_eq!(Micros::new(150).mul_div_ceil(1, 1000), Ok(Micros::new(1)));
    assert_eq!(
        Micros::new(60_000).mul_div_ceil(2000, 1000),
        Ok(Micros::new(120_000))
    );
    assert_eq!(Micros::new(1).mul_div_ceil(0, 1000), Ok(Micros::ZERO));
    assert_eq!(Micros::new(1).mul_div_ceil(1, 0), Err(MoneyError::Overflow));
    assert_eq!(Micros::MAX.mul_div_ceil(2, 1), Err(MoneyError::Overflow));
    assert_eq!(Micros::MAX.mul_div_ceil(1000, 1000), Ok(Micros::MAX));
}

proptest! {
    #[test]
    fn display_parse_round_trip(n in any::<u64>()) {
        let m = Micros::new(n);
        prop_assert_eq!(Micros::parse(&m.to_string()), Ok(m));
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<Micros>(&json).unwrap(), m);
    }

    #[test]
    fn checked_ops_never_wrap(a in any::<u64>(), b in any::<u64>(), d in 1u64..1_000_000) {
        let (x, y) = (Micros::new(a), Micros::new(b));
        match x.checked_add(y) {
            Ok(s) => prop_assert_eq!(u128::from(s.get()), u128::from(a) + u128::from(b)),
            Err(e) => { prop_assert_eq!(e, MoneyError::Overflow); prop_assert!(u128::from(a) + u128::from(b) > u128::from(u64::MAX)); }
        }
        match x.checked_mul(b) {
            Ok(p) => prop_assert_eq!(u128::from(p.get()), u128::from(a) * u128::from(b)),
            Err(_) => prop_assert!(u128::from(a) * u128::from(b) > u128::from(u64::MAX)),
        }
        let s = x.saturating_sub(y);
        prop_assert!(s <= x);
        prop_assert_eq!(s.get(), a.saturating_sub(b));
        let exact = (u128::from(a) * u128::from(b)).div_ceil(u128::from(d));
        match x.mul_div_ceil(b, d) {
            Ok(q) => {
                prop_assert_eq!(u128::from(q.get()), exact);
                // Rounded up: never below the exact quotient.
                prop_assert!(u128::from(q.get()) * u128::from(d) >= u128::from(a) * u128::from(b));
            }
            Err(_) => prop_assert!(exact > u128::from(u64::MAX)),
        }
    }

    #[test]
    fn garbage_never_parses_as_money(s in "[^0-9\\s]+[0-9]*") {
        prop_assert!(Micros::parse(&s).is_err());
    }
}

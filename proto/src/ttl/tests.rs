use super::*;

#[test]
fn parses_the_usual_units() {
    for (text, secs) in [
        ("90s", 90),
        ("45m", 45 * 60),
        ("1h", 3600),
        ("1h 30m", 5400),
        ("30d", 30 * 86_400),
        ("1y", 31_557_600),
    ] {
        assert_eq!(text.parse::<Ttl>().map(Ttl::as_secs), Ok(secs), "{text}");
    }
}

#[test]
fn refuses_zero_negative_fractional_and_garbage() {
    assert!(matches!("0s".parse::<Ttl>(), Err(TtlError::Zero(_))));
    assert!(matches!("0".parse::<Ttl>(), Err(TtlError::Zero(_))));
    assert!(matches!(
        "-1h".parse::<Ttl>(),
        Err(TtlError::Unparsable { .. })
    ));
    assert!(matches!(
        "1.5s".parse::<Ttl>(),
        Err(TtlError::Fractional(_))
    ));
    assert!(matches!(
        "500ms".parse::<Ttl>(),
        Err(TtlError::Fractional(_))
    ));
    assert!(matches!(
        "soon".parse::<Ttl>(),
        Err(TtlError::Unparsable { .. })
    ));
    assert!(matches!(
        "".parse::<Ttl>(),
        Err(TtlError::Unparsable { .. })
    ));
}

#[test]
fn display_round_trips() {
    for text in ["1h", "10m", "1y", "2days 3h"] {
        let ttl: Ttl = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(ttl.to_string().parse::<Ttl>(), Ok(ttl));
    }
}

#[test]
fn constructors_refuse_zero() {
    assert_eq!(Ttl::from_secs(0), None);
    assert_eq!(Ttl::from_secs(60).map(Ttl::as_secs), Some(60));
    assert!(Ttl::from_duration(Duration::ZERO).is_err());
    assert!(Ttl::from_duration(Duration::from_millis(1500)).is_err());
    assert_eq!(
        Ttl::from_duration(Duration::from_secs(3600)),
        Ok(Ttl::ONE_HOUR)
    );
}

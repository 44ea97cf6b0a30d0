use super::TrustDomain;
use crate::SpiffeIdError as E;

fn td(s: &str) -> TrustDomain {
    match TrustDomain::new(s) {
        Ok(td) => td,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

#[test]
fn valid_names_and_trust_domain_ids_parse() {
    let longest = "t".repeat(255);
    let longest_id = format!("spiffe://{longest}");
    let cases: &[(&str, &str)] = &[
        ("example.org", "example.org"),
        ("cluster.local", "cluster.local"),
        ("a", "a"),
        ("td-1_2.3", "td-1_2.3"),
        ("-._", "-._"),
        ("spiffe://example.org", "example.org"),
        (&longest, &longest),
        (&longest_id, &longest),
    ];
    for &(input, name) in cases {
        assert_eq!(td(input).as_str(), name, "{input:?}");
    }
}

#[test]
fn invalid_names_are_rejected_with_the_exact_reason() {
    let bad = |character, offset| E::BadTrustDomainChar { character, offset };
    let too_long = "t".repeat(256);
    let too_long_id = format!("spiffe://{too_long}");
    let cases: &[(&str, E)] = &[
        ("", E::MissingTrustDomain),
        ("Example.org", bad('E', 0)),
        ("example.ORG", bad('O', 8)),
        ("ex ample", bad(' ', 2)),
        ("exa%6dple.org", bad('%', 3)),
        ("example.org/", bad('/', 11)),
        ("b\u{fc}cher.de", bad('\u{fc}', 1)),
        ("example.org:8080", E::Port),
        ("user@example.org", E::Userinfo),
        (&too_long, E::TrustDomainTooLong { len: 256 }),
        ("spiffe://", E::MissingTrustDomain),
        ("spiffe://Example.org", bad('E', 9)),
        ("SPIFFE://example.org", E::WrongScheme),
        ("https://example.org", E::WrongScheme),
        ("spiffe:/example.org", E::WrongScheme),
        ("spiffe://example.org/", E::TrailingSlash),
        ("spiffe://example.org?x", E::Query),
        ("spiffe://example.org:443", E::Port),
        ("spiffe://example.org/ns/web", E::TrustDomainHasPath),
        (&too_long_id, E::TrustDomainTooLong { len: 256 }),
    ];
    for (input, want) in cases {
        assert_eq!(TrustDomain::new(input).as_ref(), Err(want), "{input:?}");
    }
}

#[test]
fn both_forms_give_the_same_trust_domain() {
    assert_eq!(td("example.org"), td("spiffe://example.org"));
    assert_ne!(td("example.org"), td("example.com"));
}

#[test]
fn id_is_the_trust_domain_spiffe_id() {
    let example = td("example.org");
    let id = example.id();
    assert_eq!(id.as_str(), "spiffe://example.org");
    assert_eq!(id.path(), "");
    assert!(id.is_trust_domain_id());
    assert!(id.is_member_of(&example));
    assert_eq!(id.trust_domain(), &example);
}

#[test]
fn conversions_agree() {
    assert_eq!("example.org".parse::<TrustDomain>(), Ok(td("example.org")));
    assert_eq!(TrustDomain::try_from("example.org"), Ok(td("example.org")));
    assert_eq!(td("spiffe://example.org").to_string(), "example.org");
    assert_eq!(td("example.org").as_ref(), "example.org");
    assert_eq!(
        format!("{:?}", td("example.org")),
        "TrustDomain(\"example.org\")"
    );
    assert_eq!("Example.org".parse::<TrustDomain>().ok(), None);
    assert_eq!(TrustDomain::try_from("example.org:1").ok(), None);
}

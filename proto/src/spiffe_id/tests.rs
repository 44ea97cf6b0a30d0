use std::collections::HashSet;

use super::{SpiffeId, SpiffeIdError as E};
use crate::TrustDomain;

mod proptests;

fn id(s: &str) -> SpiffeId {
    match SpiffeId::new(s) {
        Ok(id) => id,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn td(s: &str) -> TrustDomain {
    match TrustDomain::new(s) {
        Ok(td) => td,
        Err(e) => panic!("{s:?} should parse as a trust domain: {e}"),
    }
}

/// `spiffe://example.org/aaa…` of exactly `len` bytes.
fn id_of_len(len: usize) -> String {
    let prefix = "spiffe://example.org/";
    format!("{prefix}{}", "a".repeat(len - prefix.len()))
}

#[test]
fn valid_ids_parse_into_their_parts() {
    let long = id_of_len(2048);
    let long_td = format!("spiffe://{}/x", "t".repeat(255));
    let cases: &[(&str, &str, &str)] = &[
        ("spiffe://example.org", "example.org", ""),
        (
            "spiffe://example.org/ns/default/sa/web",
            "example.org",
            "/ns/default/sa/web",
        ),
        (
            "spiffe://cluster.local/halyard/node/node-1",
            "cluster.local",
            "/halyard/node/node-1",
        ),
        ("spiffe://a/b", "a", "/b"),
        ("spiffe://td_x-1.0/AZaz09.-_", "td_x-1.0", "/AZaz09.-_"),
        ("spiffe://example.org/...", "example.org", "/..."),
        (
            "spiffe://example.org/.hidden/a..b/..c",
            "example.org",
            "/.hidden/a..b/..c",
        ),
        ("spiffe://-._/-", "-._", "/-"),
        (&long, "example.org", &long[20..]),
        (&long_td, &long_td[9..264], "/x"),
    ];
    for &(input, trust_domain, path) in cases {
        let parsed = id(input);
        assert_eq!(parsed.as_str(), input);
        assert_eq!(parsed.to_string(), input);
        assert_eq!(parsed.trust_domain().as_str(), trust_domain, "{input}");
        assert_eq!(parsed.path(), path, "{input}");
        assert_eq!(parsed.is_trust_domain_id(), path.is_empty());
    }
}

#[test]
fn invalid_ids_are_rejected_with_the_exact_reason() {
    let bad_td = |character, offset| E::BadTrustDomainChar { character, offset };
    let bad_path = |character, offset| E::BadPathChar { character, offset };
    let too_long_td = format!("spiffe://{}/x", "t".repeat(256));
    let (len_2049, len_2050) = (id_of_len(2049), id_of_len(2050));
    let cases: &[(&str, E)] = &[
        ("", E::Empty),
        ("example.org", E::WrongScheme),
        ("SPIFFE://example.org", E::WrongScheme),
        ("Spiffe://example.org", E::WrongScheme),
        ("https://example.org/web", E::WrongScheme),
        ("spiffe:/example.org", E::WrongScheme),
        ("spiffe:example.org", E::WrongScheme),
        (" spiffe://example.org", E::WrongScheme),
        ("spiffe://", E::MissingTrustDomain),
        ("spiffe:///web", E::MissingTrustDomain),
        ("spiffe://Example.org", bad_td('E', 9)),
        ("spiffe://exAmple.org/web", bad_td('A', 11)),
        ("spiffe://ex%41mple.org", bad_td('%', 11)),
        ("spiffe://exa mple.org", bad_td(' ', 12)),
        ("spiffe://ex\u{e9}.org", bad_td('\u{e9}', 11)),
        ("spiffe://example.org:8080/web", E::Port),
        ("spiffe://example.org:/web", E::Port),
        ("spiffe://[::1]/web", E::Port),
        ("spiffe://user@example.org/web", E::Userinfo),
        ("spiffe://user:pass@example.org", E::Userinfo),
        ("spiffe://example.org/web?x=1", E::Query),
        ("spiffe://example.org?x", E::Query),
        ("spiffe://?x", E::Query),
        ("spiffe://example.org/web#frag", E::Fragment),
        ("spiffe://example.org#", E::Fragment),
        ("spiffe://example.org/a#b?c", E::Fragment),
        ("spiffe://example.org/", E::TrailingSlash),
        ("spiffe://example.org/web/", E::TrailingSlash),
        ("spiffe://example.org//web", E::EmptySegment),
        ("spiffe://example.org/a//b", E::EmptySegment),
        ("spiffe://example.org/a//", E::EmptySegment),
        ("spiffe://example.org/.", E::DotSegment { segment: "." }),
        ("spiffe://example.org/a/./b", E::DotSegment { segment: "." }),
        (
            "spiffe://example.org/a/../b",
            E::DotSegment { segment: ".." },
        ),
        ("spiffe://example.org/a/..", E::DotSegment { segment: ".." }),
        ("spiffe://example.org/a%20b", bad_path('%', 22)),
        ("spiffe://example.org/a b", bad_path(' ', 22)),
        ("spiffe://example.org/caf\u{e9}", bad_path('\u{e9}', 24)),
        ("spiffe://example.org/a\\b", bad_path('\\', 22)),
        ("spiffe://example.org/a:b", bad_path(':', 22)),
        ("spiffe://example.org/a@b", bad_path('@', 22)),
        ("spiffe://example.org/ok/a\nb", bad_path('\n', 25)),
        (&len_2049, E::TooLong { len: 2049 }),
        (&len_2050, E::TooLong { len: 2050 }),
        (&too_long_td, E::TrustDomainTooLong { len: 256 }),
    ];
    for (input, want) in cases {
        assert_eq!(SpiffeId::new(input).as_ref(), Err(want), "{input:?}");
    }
}

#[test]
fn from_path_builds_the_same_id_as_parsing() {
    let example = td("example.org");
    let cases = [
        ("", "spiffe://example.org"),
        (
            "/ns/default/sa/web",
            "spiffe://example.org/ns/default/sa/web",
        ),
        ("/halyard/ca", "spiffe://example.org/halyard/ca"),
    ];
    for (path, want) in cases {
        assert_eq!(
            SpiffeId::from_path(&example, path),
            Ok(id(want)),
            "{path:?}"
        );
    }
}

#[test]
fn from_path_rejects_bad_paths() {
    let example = td("example.org");
    let long_path = format!("/{}", "a".repeat(2048 - 21 + 1));
    let cases = [
        ("ns/default", E::MissingLeadingSlash),
        ("/", E::TrailingSlash),
        ("/a/", E::TrailingSlash),
        ("//a", E::EmptySegment),
        ("/a/./b", E::DotSegment { segment: "." }),
        ("/..", E::DotSegment { segment: ".." }),
        (
            "/a?b",
            E::BadPathChar {
                character: '?',
                offset: 2,
            },
        ),
        (
            "/a#b",
            E::BadPathChar {
                character: '#',
                offset: 2,
            },
        ),
        (
            "/a/%2e",
            E::BadPathChar {
                character: '%',
                offset: 3,
            },
        ),
        (&long_path, E::TooLong { len: 2049 }),
    ];
    for (path, want) in cases {
        assert_eq!(SpiffeId::from_path(&example, path), Err(want), "{path:?}");
    }
}

#[test]
fn from_segments_builds_the_same_id_as_parsing() {
    let example = td("example.org");
    assert_eq!(SpiffeId::from_segments(&example, &[]), Ok(example.id()));
    assert_eq!(
        SpiffeId::from_segments(&example, &["ns", "default", "sa", "web"]),
        Ok(id("spiffe://example.org/ns/default/sa/web"))
    );
}

#[test]
fn from_segments_rejects_bad_segments() {
    let example = td("example.org");
    let long = "a".repeat(2048 - 21 + 1);
    let cases: &[(&[&str], E)] = &[
        (
            &["a/b"],
            E::BadPathChar {
                character: '/',
                offset: 2,
            },
        ),
        (
            &["a", "b c"],
            E::BadPathChar {
                character: ' ',
                offset: 4,
            },
        ),
        (&["a", ""], E::EmptySegment),
        (&[""], E::EmptySegment),
        (&[".."], E::DotSegment { segment: ".." }),
        (&["a", "."], E::DotSegment { segment: "." }),
        (&[&long], E::TooLong { len: 2049 }),
    ];
    for (segments, want) in cases {
        assert_eq!(
            SpiffeId::from_segments(&example, segments).as_ref(),
            Err(want)
        );
    }
}

#[test]
fn membership_follows_the_trust_domain_exactly() {
    let web = id("spiffe://example.org/web");
    assert!(web.is_member_of(&td("example.org")));
    assert!(!web.is_member_of(&td("example.com")));
    assert!(!web.is_member_of(&td("sub.example.org")));
    assert!(!web.is_member_of(&td("example.or")));
    assert!(!web.is_trust_domain_id());
    assert!(id("spiffe://example.org").is_trust_domain_id());
}

#[test]
fn conversions_agree() {
    let text = "spiffe://example.org/ns/default/sa/web";
    let parsed: Result<SpiffeId, _> = text.parse();
    assert_eq!(parsed, Ok(id(text)));
    assert_eq!(SpiffeId::try_from(text), Ok(id(text)));
    assert_eq!(id(text).as_ref(), text);
    assert_eq!(format!("{:?}", id(text)), format!("SpiffeId({text:?})"));
    assert_eq!("spiffe://Example.org".parse::<SpiffeId>().ok(), None);
    assert_eq!(SpiffeId::try_from("spiffe://example.org/").ok(), None);
}

#[test]
fn equal_ids_hash_and_order_as_strings() {
    let example = td("example.org");
    let mut set = HashSet::new();
    set.insert(id("spiffe://example.org/a"));
    assert!(
        set.contains(&SpiffeId::from_segments(&example, &["a"]).unwrap_or_else(|e| panic!("{e}")))
    );
    assert!(id("spiffe://example.org/A") < id("spiffe://example.org/a"));
    assert!(id("spiffe://a.org/z") < id("spiffe://b.org/a"));
    assert_ne!(id("spiffe://example.org/A"), id("spiffe://example.org/a"));
}

#[test]
fn messages_say_what_is_wrong() {
    let cases = [
        (E::Empty, "SPIFFE ID is empty"),
        (
            E::TooLong { len: 2050 },
            "SPIFFE ID is 2050 bytes; the limit is 2048",
        ),
        (E::WrongScheme, "scheme must be 'spiffe://'"),
        (E::MissingTrustDomain, "trust domain is missing"),
        (
            E::BadTrustDomainChar {
                character: 'A',
                offset: 9,
            },
            "trust domain character 'A' at byte 9 is not allowed: \
             trust domains are lowercase letters, digits, '.', '-' and '_'",
        ),
        (
            E::TrustDomainTooLong { len: 256 },
            "trust domain is 256 bytes; the limit is 255",
        ),
        (E::Port, "SPIFFE IDs cannot have a port"),
        (E::Userinfo, "SPIFFE IDs cannot have userinfo"),
        (E::Query, "SPIFFE IDs cannot have a query"),
        (E::Fragment, "SPIFFE IDs cannot have a fragment"),
        (E::MissingLeadingSlash, "path must start with '/'"),
        (
            E::BadPathChar {
                character: '%',
                offset: 22,
            },
            "path character '%' at byte 22 is not allowed: \
             path segments are letters, digits, '.', '-' and '_'",
        ),
        (E::EmptySegment, "path has an empty segment"),
        (
            E::DotSegment { segment: ".." },
            "path has a dot segment '..'",
        ),
        (E::TrailingSlash, "path has a trailing slash"),
        (E::TrustDomainHasPath, "a trust domain cannot have a path"),
    ];
    for (error, want) in cases {
        assert_eq!(error.to_string(), want);
    }
}

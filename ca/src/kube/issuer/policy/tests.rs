use super::*;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn spec(ids: &[&str], dns: &[&str]) -> IssuerPolicySpec {
    IssuerPolicySpec {
        allowed_spiffe_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        allowed_dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
        ..IssuerPolicySpec::default()
    }
}

fn asked<'a>(namespace: &'a str, uris: &'a [String]) -> Asked<'a> {
    Asked {
        namespace,
        uris,
        dns_names: &[],
        usages: &[],
        is_ca: false,
        duration: None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_star_stands_for_one_segment() {
    let id = |pattern, name| glob_match(pattern, name, '/');
    assert!(id("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa/b"));
    assert!(!id("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/x/sa/b"));
    assert!(!id("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa"));
    assert!(!id("spiffe://td/ns/*/sa/*", "spiffe://td/ns//sa/b"));
    assert!(id("spiffe://td/ns/*/sa/web-*", "spiffe://td/ns/a/sa/web-1"));
    assert!(!id(
        "spiffe://td/ns/*/sa/web-*",
        "spiffe://td/ns/a/sa/api-1"
    ));
    assert!(id(
        "spiffe://td/ns/a/sa/*-reader",
        "spiffe://td/ns/a/sa/db-reader"
    ));
    assert!(id("spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b"));
    assert!(!id("spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/bb"));
    assert!(!id("spiffe://td/ns/a/sa/b", "spiffe://other/ns/a/sa/b"));
    // A star in one segment never reaches into the next.
    assert!(!id("spiffe://td/ns/a*", "spiffe://td/ns/a/b"));
    assert!(id("spiffe://td/*a*b*", "spiffe://td/xaxxbx"));
    assert!(!id("spiffe://td/*a*b*", "spiffe://td/xbxxax"));

    let dns = |pattern, name| glob_match(pattern, name, '.');
    assert!(dns("*.example.com", "web.example.com"));
    assert!(!dns("*.example.com", "a.web.example.com"));
    assert!(!dns("*.example.com", "example.com"));
    assert!(dns("web.*.svc", "web.apps.svc"));
    assert!(!dns("web.*.svc", "web.apps.svc.cluster.local"));
}

#[test]
fn go_durations_parse_like_go() {
    let secs = |text| parse_go_duration(text).map(|d| d.as_secs_f64());
    assert_eq!(secs("2160h0m0s"), Ok(2160.0 * 3600.0));
    assert_eq!(secs("1h30m"), Ok(5400.0));
    assert_eq!(secs("90m"), Ok(5400.0));
    assert_eq!(secs("1.5h"), Ok(5400.0));
    assert_eq!(secs("300ms"), Ok(0.3));
    assert_eq!(secs("+10s"), Ok(10.0));
    assert_eq!(secs("0"), Ok(0.0));
    assert_eq!(secs("1us"), Ok(0.000_001));
    for bad in [
        "",
        "-1h",
        "1",
        "h",
        "1d",
        "1.2.3s",
        ".s",
        "1h 30m",
        "99999999999999999999h",
    ] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_go_duration("1d").unwrap_err(),
        "\"1d\" is not a duration such as 24h or 1h30m: unknown unit \"d\""
    );
}

#[test]
fn a_spec_is_checked_when_compiled() {
    let compile = |spec: &IssuerPolicySpec| IssuerPolicy::compile(spec, &td(), None);
    assert!(
        compile(&spec(
            &["spiffe://cluster.local/ns/{namespace}/sa/*"],
            &["*.{namespace}.svc"]
        ))
        .is_ok()
    );
    assert_eq!(compile(&spec(&[], &[])), Err(SpecError::NoSpiffeIds));
    for bad in [
        "spiffe://other.td/ns/*/sa/*",
        "spiffe://*/ns/a/sa/b",
        "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/",
        "spiffe://cluster.local/ns/a b",
        "spiffe://cluster.local/ns/?x",
    ] {
        assert!(
            matches!(
                compile(&spec(&[bad], &[])),
                Err(SpecError::BadSpiffeIdPattern { .. })
            ),
            "{bad}"
        );
    }
    for bad in ["Web.example.com", "a..b", "a_b.com", "*.example.com."] {
        assert!(
            matches!(
                compile(&spec(&["spiffe://cluster.local/x"], &[bad])),
                Err(SpecError::BadDnsPattern { .. })
            ),
            "{bad}"
        );
    }
    let mut bad_max = spec(&["spiffe://cluster.local/x"], &[]);
    bad_max.max_duration = Some("1 day".into());
    assert!(matches!(
        compile(&bad_max),
        Err(SpecError::BadMaxDuration(_))
    ));
}

#[test]
fn the_namespace_placeholder_is_the_requests_namespace() {
    let policy = IssuerPolicy::compile(
        &spec(
            &["spiffe://cluster.local/ns/{namespace}/sa/*"],
            &["*.{namespace}.svc"],
        ),
        &td(),
        None,
    )
    .unwrap();
    let own = strings(&["spiffe://cluster.local/ns/apps/sa/web"]);
    let granted = policy.authorize(&asked("apps", &own), &td()).unwrap();
    assert_eq!(
        granted.spiffe_id.as_str(),
        "spiffe://cluster.local/ns/apps/sa/web"
    );
    assert_eq!(granted.ttl, None);

    let err = policy.authorize(&asked("other", &own), &td()).unwrap_err();
    assert!(matches!(err, Refusal::SpiffeIdNotAllowed { .. }), "{err}");

    let dns = strings(&["web.apps.svc"]);
    let foreign_dns = strings(&["web.other.svc"]);
    assert!(
        policy
            .authorize(
                &Asked {
                    dns_names: &dns,
                    ..asked("apps", &own)
                },
                &td()
            )
            .is_ok()
    );
    let err = policy
        .authorize(
            &Asked {
                dns_names: &foreign_dns,
                ..asked("apps", &own)
            },
            &td(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "DNS name \"web.other.svc\" matches none of spec.allowedDnsNames [\"*.{namespace}.svc\"]"
    );
}

#[test]
fn a_namespaced_issuer_signs_only_its_namespace() {
    // Whatever its patterns say: a namespace admin must not mint another namespace's identity.
    let policy = IssuerPolicy::compile(
        &spec(&["spiffe://cluster.local/ns/*/sa/*"], &[]),
        &td(),
        Some("apps"),
    )
    .unwrap();
    let own = strings(&["spiffe://cluster.local/ns/apps/sa/web"]);
    assert!(policy.authorize(&asked("apps", &own), &td()).is_ok());
    let foreign = strings(&["spiffe://cluster.local/ns/kube-system/sa/admin"]);
    assert_eq!(
        policy
            .authorize(&asked("apps", &foreign), &td())
            .unwrap_err(),
        Refusal::OutsideNamespace {
            id: "spiffe://cluster.local/ns/kube-system/sa/admin".into(),
            namespace: "apps".into(),
        }
    );
    // A prefix of another namespace is another namespace.
    let longer = strings(&["spiffe://cluster.local/ns/apps-2/sa/web"]);
    assert!(policy.authorize(&asked("apps", &longer), &td()).is_err());
}

#[test]
fn what_is_asked_besides_the_id_is_judged() {
    let mut s = spec(&["spiffe://cluster.local/ns/*/sa/*"], &[]);
    s.max_duration = Some("12h".into());
    s.allowed_usages = Some(vec![
        Usage::DigitalSignature,
        Usage::KeyEncipherment,
        Usage::ClientAuth,
    ]);
    let policy = IssuerPolicy::compile(&s, &td(), None).unwrap();
    let id = strings(&["spiffe://cluster.local/ns/apps/sa/web"]);
    let base = asked("apps", &id);

    // Lifetimes: none asked → the issuer's cap; more than the cap → the cap; less → as asked.
    let ttl = |duration| {
        policy
            .authorize(&Asked { duration, ..base }, &td())
            .map(|g| g.ttl)
    };
    assert_eq!(ttl(None), Ok(Ttl::from_secs(12 * 3600)));
    assert_eq!(ttl(Some("2160h0m0s")), Ok(Ttl::from_secs(12 * 3600)));
    assert_eq!(ttl(Some("1h")), Ok(Ttl::from_secs(3600)));
    assert!(matches!(ttl(Some("0s")), Err(Refusal::BadDuration(_))));
    assert!(matches!(ttl(Some("soon")), Err(Refusal::BadDuration(_))));

    let usages = |list: &[&str]| {
        let list = strings(list);
        policy
            .authorize(
                &Asked {
                    usages: &list,
                    ..base
                },
                &td(),
            )
            .map(|_| ())
    };
    // cert-manager's default (none named) is digital signature + key encipherment.
    assert_eq!(usages(&[]), Ok(()));
    assert_eq!(usages(&["digital signature", "client auth"]), Ok(()));
    assert!(matches!(
        usages(&["server auth"]),
        Err(Refusal::UsageNotAllowed { .. })
    ));
    assert_eq!(
        usages(&["code signing"]),
        Err(Refusal::UnsupportedUsage("code signing".into()))
    );

    assert_eq!(
        policy.authorize(
            &Asked {
                is_ca: true,
                ..base
            },
            &td()
        ),
        Err(Refusal::CaRequested)
    );
    let none: Vec<String> = Vec::new();
    assert!(matches!(
        policy.authorize(&asked("apps", &none), &td()),
        Err(Refusal::UriSans(_))
    ));
    let two = strings(&[
        "spiffe://cluster.local/ns/apps/sa/a",
        "spiffe://cluster.local/ns/apps/sa/b",
    ]);
    assert!(matches!(
        policy.authorize(&asked("apps", &two), &td()),
        Err(Refusal::UriSans(_))
    ));
    let https = strings(&["https://example.com/"]);
    assert!(matches!(
        policy.authorize(&asked("apps", &https), &td()),
        Err(Refusal::NotSpiffeId { .. })
    ));
}

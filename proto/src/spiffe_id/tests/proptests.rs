use proptest::collection::vec;
use proptest::prelude::*;

use crate::fuzzing::spiffe_id_round_trip;
use crate::{SpiffeId, TrustDomain};

fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,63}"
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}".prop_filter("dot segments are invalid", |s| s != "." && s != "..")
}

fn valid_id() -> impl Strategy<Value = String> {
    (trust_domain(), vec(segment(), 0..6)).prop_map(|(td, segments)| {
        let path: String = segments.iter().map(|s| format!("/{s}")).collect();
        format!("spiffe://{td}{path}")
    })
}

/// A valid ID with one byte inserted, replaced or removed: each edit may break exactly one rule,
/// or none (inserting `a`), so both outcomes are well exercised.
fn near_miss() -> impl Strategy<Value = String> {
    let edit = prop::sample::select(&b"aZ0.-_/:@?#% A\\\n"[..]);
    (valid_id(), any::<prop::sample::Index>(), edit, 0..3u8).prop_map(|(id, at, byte, kind)| {
        let mut bytes = id.into_bytes();
        let i = at.index(bytes.len());
        match kind {
            0 => bytes.insert(i, byte),
            1 => bytes[i] = byte,
            _ => drop(bytes.remove(i)),
        }
        // Only ASCII is inserted into ASCII, so the bytes stay UTF-8.
        String::from_utf8(bytes).unwrap_or_default()
    })
}

proptest! {
    #[test]
    fn generated_valid_ids_round_trip(td in trust_domain(), segments in vec(segment(), 0..8)) {
        let path: String = segments.iter().map(|s| format!("/{s}")).collect();
        let text = format!("spiffe://{td}{path}");
        let id = SpiffeId::new(&text)?;
        let shown = id.to_string();
        prop_assert_eq!(&shown, &text);
        prop_assert_eq!(SpiffeId::new(&shown)?, id.clone());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(id.path(), path.as_str());
        let trust_domain = TrustDomain::new(&td)?;
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        prop_assert_eq!(SpiffeId::from_segments(&trust_domain, &refs)?, id.clone());
        prop_assert_eq!(SpiffeId::from_path(&trust_domain, &path)?, id);
    }

    #[test]
    fn arbitrary_strings_that_parse_redisplay_identically(text in any::<String>()) {
        if let Ok(id) = SpiffeId::new(&text) {
            prop_assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn near_misses_that_parse_redisplay_identically(text in near_miss()) {
        if let Ok(id) = SpiffeId::new(&text) {
            prop_assert_eq!(id.to_string(), text.clone());
        }
        spiffe_id_round_trip(text.as_bytes());
    }
}

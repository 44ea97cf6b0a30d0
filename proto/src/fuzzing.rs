//! Properties the fuzz targets assert, shared with the tests that replay their corpus.
//!
//! Each function takes arbitrary bytes and panics if, and only if, a property is violated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{SpiffeId, TrustBundle, TrustDomain};

/// Asserts the parse properties of [`SpiffeId`] on arbitrary input.
///
/// For UTF-8 input, [`SpiffeId::new`] must accept exactly what an independent, deliberately
/// simple reading of the SPIFFE-ID rules accepts. When it does accept:
/// - the ID displays as the input, byte for byte, and re-parses to an equal value;
/// - the input is at most 2048 bytes;
/// - its trust domain parses on its own and the ID is a member of it;
/// - its path obeys the path rules (checked here without the parser);
/// - [`SpiffeId::from_path`] and [`SpiffeId::from_segments`] rebuild the same ID.
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn spiffe_id_round_trip(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = SpiffeId::new(text);
    assert_eq!(
        parsed.is_ok(),
        reference_accepts(text),
        "parser and reference disagree on {text:?}: {parsed:?}"
    );
    let Ok(id) = parsed else {
        return;
    };

    let shown = id.to_string();
    assert_eq!(shown, text, "display does not round-trip");
    assert_eq!(id.as_str(), text);
    match SpiffeId::new(&shown) {
        Ok(again) => assert_eq!(again, id, "re-parse gives a different value"),
        Err(e) => panic!("displayed ID {shown:?} does not re-parse: {e}"),
    }
    assert!(text.len() <= 2048, "accepted {} bytes", text.len());

    let td = match TrustDomain::new(id.trust_domain().as_str()) {
        Ok(td) => td,
        Err(e) => panic!("trust domain of {text:?} does not parse alone: {e}"),
    };
    assert!(id.is_member_of(&td), "{text:?} is not a member of {td}");
    assert!(trust_domain_ok(td.as_str()), "bad trust domain {td}");

    let path = id.path();
    assert!(path_ok(path), "bad path {path:?}");
    assert_eq!(id.is_trust_domain_id(), path.is_empty());
    assert_eq!(format!("spiffe://{td}{path}"), text);

    assert_eq!(SpiffeId::from_path(&td, path).as_ref(), Ok(&id));
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    assert_eq!(SpiffeId::from_segments(&td, &segments).as_ref(), Ok(&id));
}

/// Asserts the read/write properties of SPIFFE bundles ([`TrustBundle::from_spiffe_json`] and
/// [`TrustBundle::to_spiffe_json`]) on arbitrary input.
///
/// When the input is accepted as a bundle `b`:
/// - it is a JSON object whose `keys` array has one member per root of `b`, in order, and each
///   root is the standard-base64 decoding of that member's one `x5c` entry, with `use` set to
///   `x509-svid`;
/// - `b` writes out, and what it writes reads back equal to `b` and writes out the same again
///   (so `from(to(b)) == b` for every bundle the reader can produce).
///
/// A refusal must say why (a non-empty message).
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn bundle_json_round_trip(data: &[u8]) {
    let td = match TrustDomain::new("example.org") {
        Ok(td) => td,
        Err(e) => panic!("the fixed trust domain does not parse: {e}"),
    };
    let bundle = match TrustBundle::from_spiffe_json(td.clone(), data) {
        Ok(bundle) => bundle,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "refusal without a message");
            return;
        }
    };
    assert_eq!(bundle.trust_domain(), &td);

    let value: serde_json::Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(e) => panic!("accepted input is not JSON: {e}"),
    };
    let keys = value["keys"].as_array().map_or(&[][..], Vec::as_slice);
    assert_eq!(keys.len(), bundle.roots().len(), "one root per key");
    for (key, root) in keys.iter().zip(bundle.roots()) {
        assert_eq!(
            key["use"], "x509-svid",
            "accepted a key whose use is {}",
            key["use"]
        );
        let x5c = key["x5c"].as_array().map_or(&[][..], Vec::as_slice);
        assert_eq!(
            x5c.len(),
            1,
            "accepted a key with {} x5c entries",
            x5c.len()
        );
        let decoded = x5c[0].as_str().map(|b64| STANDARD.decode(b64));
        assert_eq!(decoded, Some(Ok(root.clone())), "root is not its x5c entry");
    }

    let json = match bundle.to_spiffe_json() {
        Ok(json) => json,
        Err(e) => panic!("an accepted bundle does not write out: {e}"),
    };
    let again = match TrustBundle::from_spiffe_json(td, json.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("what the bundle writes does not read back: {e}\n{json}"),
    };
    assert_eq!(again, bundle, "written and read back, the bundle changed");
    assert_eq!(
        again.to_spiffe_json().as_ref(),
        Ok(&json),
        "writing is not stable"
    );
}

/// The SPIFFE-ID rules, written as plainly as possible to cross-check the parser.
fn reference_accepts(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("spiffe://") else {
        return false;
    };
    let (td, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    text.len() <= 2048 && trust_domain_ok(td) && path_ok(path)
}

fn trust_domain_ok(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn path_ok(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    body.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    })
}

#[cfg(test)]
mod tests;

/// For the seed-corpus tests of every crate: writes `files` into `dir` when
/// `HALYARD_WRITE_SEEDS=1`; otherwise checks that every seed the code generates is in the
/// committed corpus, so a seed list changed without regenerating fails. Regenerated DER seeds
/// differ in bytes (fresh keys), so only names are compared.
///
/// # Panics
///
/// When a seed is missing or cannot be written: it is meant for tests.
pub fn write_or_check_seeds(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) {
    if std::env::var("HALYARD_WRITE_SEEDS").as_deref() == Ok("1") {
        for (name, data) in files {
            if let Err(e) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(name), data))
            {
                panic!("cannot write seed {}: {e}", dir.join(name).display());
            }
        }
        return;
    }
    let missing: Vec<&str> = files
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !dir.join(name).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "seeds missing from {}: {missing:?}; regenerate with HALYARD_WRITE_SEEDS=1 (fuzz/README.md)",
        dir.display()
    );
}

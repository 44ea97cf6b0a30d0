//! Reading Envoy's admin answers: `/certs` (JSON) and `/stats` (text).

use std::collections::BTreeMap;

use halyard_proto::SpiffeId;
use serde_json::Value;

/// One certificate as Envoy's admin `/certs` shows it (`admin.v3.CertificateDetails`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvoyCert {
    /// Where it came from: a file path, or `<inline>` for SDS secrets.
    pub path: String,
    /// The serial number as Envoy prints it: lowercase hex, two digits a byte, no leading
    /// zero bytes (see [`serial_hex`]).
    pub serial_number: String,
    /// Every URI SAN.
    pub uri_sans: Vec<String>,
    /// The SPIFFE ID: the URI SAN, when there is exactly one and it is a valid SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Days until this certificate, or the first of its chain, expires.
    pub days_until_expiration: u64,
    /// notBefore, as Envoy writes it (RFC 3339).
    pub valid_from: String,
    /// notAfter, as Envoy writes it (RFC 3339).
    pub expiration_time: String,
}

impl EnvoyCert {
    /// Whether this is the certificate with `serial` (bytes, big-endian, as in the DER).
    pub fn has_serial(&self, serial: &[u8]) -> bool {
        self.serial_number == serial_hex(serial)
    }
}

/// `serial` (big-endian bytes) the way Envoy prints serial numbers (BoringSSL's `BN_bn2hex`,
/// lowercased): two lowercase hex digits per byte, leading zero bytes dropped, `0` for zero.
pub fn serial_hex(serial: &[u8]) -> String {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    let hex: String = serial[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "0".to_owned() } else { hex }
}

/// Which list of each `/certs` entry to read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CertList {
    /// `cert_chain`: the Envoy's own certificates.
    Chain,
    /// `ca_cert`: the trusted roots of each TLS context.
    Ca,
}

/// The certificates of every TLS context in a `/certs` answer.
pub(crate) fn parse_certs(body: &str, list: CertList) -> Result<Vec<EnvoyCert>, String> {
    let json: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let key = match list {
        CertList::Chain => "cert_chain",
        CertList::Ca => "ca_cert",
    };
    let mut certs = Vec::new();
    let contexts = json["certificates"].as_array().cloned().unwrap_or_default();
    for context in &contexts {
        for cert in context[key].as_array().into_iter().flatten() {
            certs.push(parse_cert(cert)?);
        }
    }
    Ok(certs)
}

fn parse_cert(cert: &Value) -> Result<EnvoyCert, String> {
    let text = |field: &str| cert[field].as_str().unwrap_or_default().to_owned();
    let uri_sans: Vec<String> = cert["subject_alt_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|san| san["uri"].as_str().map(str::to_owned))
        .collect();
    let spiffe_id = match uri_sans.as_slice() {
        [one] => SpiffeId::new(one).ok(),
        _ => None,
    };
    // A uint64 in protobuf's JSON mapping is a string; accept a number too.
    let days = &cert["days_until_expiration"];
    let days_until_expiration = days
        .as_u64()
        .or_else(|| days.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("days_until_expiration is {days} in {cert}"))?;
    Ok(EnvoyCert {
        path: text("path"),
        serial_number: text("serial_number").to_ascii_lowercase(),
        uri_sans,
        spiffe_id,
        days_until_expiration,
        valid_from: text("valid_from"),
        expiration_time: text("expiration_time"),
    })
}

/// The counters and gauges of a `/stats` answer (`name: value` lines) whose names start with
/// `prefix`. Histograms (whose values are not one number) are left out.
pub(crate) fn parse_stats(body: &str, prefix: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{CertList, parse_certs, parse_stats, serial_hex};

    const CERTS: &str = r#"{"certificates":[{
        "ca_cert":[{"path":"/r.pem","serial_number":"01","subject_alt_names":[{"uri":"spiffe://cluster.local"}],
                    "days_until_expiration":"3650","valid_from":"2025-01-01T00:00:00Z","expiration_time":"2035-01-01T00:00:00Z"}],
        "cert_chain":[{"path":"<inline>","serial_number":"0F3A","subject_alt_names":[{"uri":"spiffe://cluster.local/ns/default/sa/web"},{"dns":"web"}],
                    "days_until_expiration":"0","valid_from":"2025-01-01T00:00:00Z","expiration_time":"2025-01-01T01:00:00Z"}]
    }]}"#;

    #[test]
    fn certs_are_read_from_the_chain_and_the_roots() {
        let chain = parse_certs(CERTS, CertList::Chain).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].serial_number, "0f3a");
        assert!(chain[0].has_serial(&[0x00, 0x0f, 0x3a]));
        assert!(!chain[0].has_serial(&[0xf3, 0xa0]));
        assert_eq!(
            chain[0].spiffe_id.as_ref().unwrap().as_str(),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert_eq!(chain[0].days_until_expiration, 0);
        assert_eq!(chain[0].expiration_time, "2025-01-01T01:00:00Z");
        let roots = parse_certs(CERTS, CertList::Ca).unwrap();
        assert_eq!(roots[0].days_until_expiration, 3650);
        assert_eq!(roots[0].path, "/r.pem");
    }

    #[test]
    fn bad_certs_answers_are_errors() {
        assert!(parse_certs("nope", CertList::Chain).is_err());
        assert!(
            parse_certs(
                r#"{"certificates":[{"cert_chain":[{"serial_number":"1"}]}]}"#,
                CertList::Chain
            )
            .is_err()
        );
        assert!(
            parse_certs(r#"{"certificates":[]}"#, CertList::Chain)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn stats_keep_numbers_with_the_prefix() {
        let body = "cluster.a.x: 3\ncluster.b.y: 4\ncluster.a.h: P0(nan,1) P25(nan,2)\n";
        let stats = parse_stats(body, "cluster.a.");
        assert_eq!(stats.len(), 1);
        assert_eq!(stats["cluster.a.x"], 3);
    }

    #[test]
    fn serials_print_like_envoy() {
        assert_eq!(serial_hex(&[0x00, 0x0a, 0xbc]), "0abc");
        assert_eq!(serial_hex(&[0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
    }
}

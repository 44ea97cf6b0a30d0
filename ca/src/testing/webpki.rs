//! rustls-webpki as an independent verifier.

use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};

/// Verifies `leaf` up to `root` through `intermediates` with webpki, as a TLS server certificate
/// (`server = true`) or a client certificate, at `now`.
pub fn webpki_verify(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    root: &[u8],
    now: SystemTime,
    server: bool,
) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root)?;
    let leaf = CertificateDer::from(leaf);
    let end_entity = webpki::EndEntityCert::try_from(&leaf)?;
    let intermediates: Vec<_> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let usage = if server {
        webpki::KeyUsage::server_auth()
    } else {
        webpki::KeyUsage::client_auth()
    };
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| webpki::Error::BadDerTime)?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            usage,
            None,
            None,
        )
        .map(drop)
}

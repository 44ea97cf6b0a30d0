//! Envoy secrets built from SVIDs and the trust state.

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use crate::cache::{Svid, TrustState, pem_certs};

/// The validation context's resource name, as Istio names it.
pub const ROOTCA: &str = "ROOTCA";

/// The type of every SDS resource.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn inline(bytes: impl Into<Vec<u8>>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.into())),
        ..DataSource::default()
    })
}

/// A `TlsCertificate` secret named `name` holding `svid`'s chain and key.
pub(super) fn tls_certificate(name: &str, svid: &Svid) -> Any {
    pack_any(Secret {
        name: name.to_owned(),
        r#type: Some(Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(svid.chain_pem()),
            private_key: inline(svid.key_pem().as_bytes().to_vec()),
            ..TlsCertificate::default()
        })),
    })
}

/// A validation context named `name`: the bundle's roots, and the CRLs checked on leaves only.
pub(super) fn validation_context(name: &str, trust: &TrustState) -> Any {
    let crl = (!trust.crls.is_empty()).then(|| {
        trust
            .crls
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("X509 CRL", der.clone())))
            .collect::<String>()
    });
    pack_any(Secret {
        name: name.to_owned(),
        r#type: Some(Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(pem_certs(&trust.roots)),
            crl: crl.and_then(inline),
            only_verify_leaf_cert_crl: !trust.crls.is_empty(),
            ..CertificateValidationContext::default()
        })),
    })
}

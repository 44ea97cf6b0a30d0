//! The certificate profile: which fields and extensions each kind of certificate gets.
//!
//! One function per kind, so the whole profile reads in one place (DESIGN.md "Certificates").

use std::time::SystemTime;

use halyard_proto::TrustDomain;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::policy::Grant;
use super::serial::Serial;

/// The organization every Halyard CA name carries.
const ORGANIZATION: &str = "Halyard";

/// A validity period.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validity {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// A self-signed root: CA without a path length limit, so it can sign intermediates and
/// cross-sign a successor root; keyCertSign and cRLSign, critical; SKI; `spiffe://<td>` URI SAN.
pub(crate) fn root(
    trust_domain: &TrustDomain,
    serial: &Serial,
    validity: Validity,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = ca_base(trust_domain, serial, validity)?;
    params.distinguished_name = ca_name(&format!("Halyard root CA {trust_domain}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok(params)
}

/// An intermediate: CA with path length 0, keyCertSign and cRLSign, critical; SKI and AKI;
/// `spiffe://<td>` URI SAN.
pub(crate) fn intermediate(
    trust_domain: &TrustDomain,
    common_name: &str,
    serial: &Serial,
    validity: Validity,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = ca_base(trust_domain, serial, validity)?;
    params.distinguished_name = ca_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// What an intermediate's CSR asks for: its name and `spiffe://<td>`.
pub(crate) fn intermediate_request(
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<CertificateParams, rcgen::Error> {
    let stamp = OffsetDateTime::from(now).unix_timestamp();
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&format!("Halyard intermediate CA {trust_domain} {stamp}"));
    params.subject_alt_names = vec![SanType::URI(trust_domain.id().as_str().try_into()?)];
    Ok(params)
}

/// An X509-SVID leaf: empty subject, so the one URI SAN is critical; DNS and IP SANs from the
/// grant; CA:false; digitalSignature (+ keyEncipherment for RSA), critical; serverAuth and
/// clientAuth; SKI and AKI.
pub(crate) fn leaf(
    grant: &Grant,
    rsa: bool,
    serial: &Serial,
    validity: Validity,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let mut sans = vec![SanType::URI(grant.spiffe_id.as_str().try_into()?)];
    for dns in &grant.dns_names {
        sans.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    sans.extend(grant.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if rsa {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_serial_and_validity(&mut params, serial, validity);
    Ok(params)
}

fn ca_base(
    trust_domain: &TrustDomain,
    serial: &Serial,
    validity: Validity,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(trust_domain.id().as_str().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_serial_and_validity(&mut params, serial, validity);
    Ok(params)
}

fn ca_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

fn set_serial_and_validity(params: &mut CertificateParams, serial: &Serial, validity: Validity) {
    params.serial_number = Some(serial.to_rcgen());
    params.not_before = OffsetDateTime::from(validity.not_before);
    params.not_after = OffsetDateTime::from(validity.not_after);
}

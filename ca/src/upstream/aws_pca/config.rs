//! The `aws_pca` configuration: which CA, how to reach it, what to ask it for.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;

use aws_sdk_acmpca::types::{KeyAlgorithm, SigningAlgorithm as SdkSigningAlgorithm};
use halyard_proto::Ttl;
use serde::{Deserialize, Deserializer};

use crate::upstream::UpstreamError;

/// The template AWS Private CA applies to Halyard's intermediate: a CA that may sign leaves only.
pub const DEFAULT_TEMPLATE_ARN: &str =
    "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1";

/// Seven days: the longest a CA in short-lived certificate mode issues, so the default suits
/// both CA modes.
const DEFAULT_INTERMEDIATE_TTL: Ttl = match Ttl::from_secs(7 * 24 * 3600) {
    Some(ttl) => ttl,
    None => Ttl::ONE_HOUR,
};

/// IssueCertificate calls a second: well below PCA's default quota of 25.
const DEFAULT_MAX_ISSUE_RATE: NonZeroU32 = match NonZeroU32::new(5) {
    Some(rate) => rate,
    None => NonZeroU32::MIN,
};

/// How Halyard gets its intermediate from AWS Private CA (the `[aws_pca]` table of the
/// configuration file). Credentials come from the standard AWS chain: environment, profile,
/// web identity (IRSA on EKS), container or instance role.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsPcaConfig {
    /// The CA that signs the intermediate.
    pub ca_arn: CaArn,
    /// The AWS region; default: the CA ARN's.
    #[serde(default)]
    pub region: Option<String>,
    /// The signing algorithm; default: the one that fits the CA's key, as
    /// `DescribeCertificateAuthority` reports it.
    #[serde(default)]
    pub signing_algorithm: Option<SigningAlgorithm>,
    /// The certificate template; default [`DEFAULT_TEMPLATE_ARN`].
    #[serde(default = "default_template_arn")]
    pub template_arn: String,
    /// Another endpoint than the region's (a VPC endpoint; an emulator in tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How long each intermediate is valid; default 7 days.
    #[serde(
        default = "default_intermediate_ttl",
        deserialize_with = "deserialize_ttl"
    )]
    pub intermediate_ttl: Ttl,
    /// The most API calls a second this process makes to PCA; default 5.
    #[serde(default = "default_max_issue_rate")]
    pub max_issue_rate: NonZeroU32,
    /// PEM files of further roots to trust besides the CA's own (while migrating between PCA
    /// hierarchies).
    #[serde(default)]
    pub extra_roots: Vec<PathBuf>,
}

fn default_template_arn() -> String {
    DEFAULT_TEMPLATE_ARN.to_owned()
}

fn default_intermediate_ttl() -> Ttl {
    DEFAULT_INTERMEDIATE_TTL
}

fn default_max_issue_rate() -> NonZeroU32 {
    DEFAULT_MAX_ISSUE_RATE
}

fn deserialize_ttl<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ttl, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl AwsPcaConfig {
    /// The defaults for the CA `ca_arn`.
    pub fn new(ca_arn: CaArn) -> AwsPcaConfig {
        AwsPcaConfig {
            ca_arn,
            region: None,
            signing_algorithm: None,
            template_arn: default_template_arn(),
            endpoint_url: None,
            intermediate_ttl: DEFAULT_INTERMEDIATE_TTL,
            max_issue_rate: DEFAULT_MAX_ISSUE_RATE,
            extra_roots: Vec::new(),
        }
    }

    /// The region calls go to.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or(self.ca_arn.region())
    }

    /// Refuses values that parse but cannot work together.
    pub(crate) fn check(&self) -> Result<(), UpstreamError> {
        let invalid = |key, message: String| Err(UpstreamError::Config { key, message });
        if let Some(region) = &self.region
            && region != self.ca_arn.region()
        {
            return invalid(
                "region",
                format!(
                    "{region:?} differs from the region of ca_arn ({}); a CA is reached in its own region",
                    self.ca_arn.region()
                ),
            );
        }
        if !self.template_arn.starts_with("arn:") || !self.template_arn.contains(":template/") {
            return invalid(
                "template_arn",
                format!(
                    "{:?} is not a PCA template ARN such as {DEFAULT_TEMPLATE_ARN}",
                    self.template_arn
                ),
            );
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid(
                "endpoint_url",
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
        Ok(())
    }
}

/// The ARN of a private CA: `arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CaArn {
    arn: String,
    region_end: usize,
    region_start: usize,
}

impl CaArn {
    /// Parses a CA ARN.
    pub fn new(arn: &str) -> Result<CaArn, UpstreamError> {
        let bad = |why: &str| UpstreamError::Config {
            key: "ca_arn",
            message: format!(
                "{arn:?} {why}; expected arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>"
            ),
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err(bad("is not an ARN"));
        };
        if prefix != "arn" || partition.is_empty() {
            return Err(bad("is not an ARN"));
        }
        if service != "acm-pca" {
            return Err(bad("is not an AWS Private CA ARN"));
        }
        if region.is_empty() {
            return Err(bad("names no region"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("names no 12-digit account"));
        }
        match resource.strip_prefix("certificate-authority/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {}
            _ => return Err(bad("names no certificate authority")),
        }
        let region_start = prefix.len() + partition.len() + service.len() + 3;
        Ok(CaArn {
            arn: arn.to_owned(),
            region_start,
            region_end: region_start + region.len(),
        })
    }

    /// The ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// Its region.
    pub fn region(&self) -> &str {
        &self.arn[self.region_start..self.region_end]
    }

    /// Whether `certificate_arn` names a certificate this CA issued.
    pub fn issued(&self, certificate_arn: &str) -> bool {
        certificate_arn
            .strip_prefix(self.arn.as_str())
            .and_then(|rest| rest.strip_prefix("/certificate/"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }
}

impl TryFrom<String> for CaArn {
    type Error = UpstreamError;

    fn try_from(arn: String) -> Result<CaArn, UpstreamError> {
        CaArn::new(&arn)
    }
}

impl FromStr for CaArn {
    type Err = UpstreamError;

    fn from_str(arn: &str) -> Result<CaArn, UpstreamError> {
        CaArn::new(arn)
    }
}

impl fmt::Display for CaArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// The key of a private CA, among those whose signatures Halyard can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKeyAlgorithm {
    /// `EC_prime256v1`.
    EcP256,
    /// `EC_secp384r1`.
    EcP384,
    /// `RSA_2048`.
    Rsa2048,
    /// `RSA_3072`.
    Rsa3072,
    /// `RSA_4096`.
    Rsa4096,
}

impl CaKeyAlgorithm {
    /// From what `DescribeCertificateAuthority` says, refusing keys whose signatures Halyard
    /// cannot verify (P-521, SM2, ML-DSA: ring has none of them).
    pub(crate) fn from_sdk(key: &KeyAlgorithm) -> Result<CaKeyAlgorithm, String> {
        match key {
            KeyAlgorithm::EcPrime256v1 => Ok(CaKeyAlgorithm::EcP256),
            KeyAlgorithm::EcSecp384r1 => Ok(CaKeyAlgorithm::EcP384),
            KeyAlgorithm::Rsa2048 => Ok(CaKeyAlgorithm::Rsa2048),
            KeyAlgorithm::Rsa3072 => Ok(CaKeyAlgorithm::Rsa3072),
            KeyAlgorithm::Rsa4096 => Ok(CaKeyAlgorithm::Rsa4096),
            other => Err(format!(
                "its key algorithm {} is not supported: Halyard verifies chains with EC P-256, \
                 P-384 or RSA keys only",
                other.as_str()
            )),
        }
    }

    /// The signing algorithm used when none is configured.
    pub fn default_signing_algorithm(self) -> SigningAlgorithm {
        match self {
            CaKeyAlgorithm::EcP256 => SigningAlgorithm::Sha256WithEcdsa,
            CaKeyAlgorithm::EcP384 => SigningAlgorithm::Sha384WithEcdsa,
            CaKeyAlgorithm::Rsa2048 | CaKeyAlgorithm::Rsa3072 | CaKeyAlgorithm::Rsa4096 => {
                SigningAlgorithm::Sha256WithRsa
            }
        }
    }

    fn is_ec(self) -> bool {
        matches!(self, CaKeyAlgorithm::EcP256 | CaKeyAlgorithm::EcP384)
    }

    /// AWS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKeyAlgorithm::EcP256 => "EC_prime256v1",
            CaKeyAlgorithm::EcP384 => "EC_secp384r1",
            CaKeyAlgorithm::Rsa2048 => "RSA_2048",
            CaKeyAlgorithm::Rsa3072 => "RSA_3072",
            CaKeyAlgorithm::Rsa4096 => "RSA_4096",
        }
    }
}

/// How PCA signs the intermediate (AWS's names in the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA with SHA-256.
    #[serde(rename = "SHA256WITHECDSA")]
    Sha256WithEcdsa,
    /// ECDSA with SHA-384.
    #[serde(rename = "SHA384WITHECDSA")]
    Sha384WithEcdsa,
    /// ECDSA with SHA-512.
    #[serde(rename = "SHA512WITHECDSA")]
    Sha512WithEcdsa,
    /// RSA PKCS#1 v1.5 with SHA-256.
    #[serde(rename = "SHA256WITHRSA")]
    Sha256WithRsa,
    /// RSA PKCS#1 v1.5 with SHA-384.
    #[serde(rename = "SHA384WITHRSA")]
    Sha384WithRsa,
    /// RSA PKCS#1 v1.5 with SHA-512.
    #[serde(rename = "SHA512WITHRSA")]
    Sha512WithRsa,
}

impl SigningAlgorithm {
    /// Every algorithm, in AWS's order.
    pub const ALL: [SigningAlgorithm; 6] = [
        SigningAlgorithm::Sha256WithEcdsa,
        SigningAlgorithm::Sha384WithEcdsa,
        SigningAlgorithm::Sha512WithEcdsa,
        SigningAlgorithm::Sha256WithRsa,
        SigningAlgorithm::Sha384WithRsa,
        SigningAlgorithm::Sha512WithRsa,
    ];

    /// AWS's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Sha256WithEcdsa => "SHA256WITHECDSA",
            SigningAlgorithm::Sha384WithEcdsa => "SHA384WITHECDSA",
            SigningAlgorithm::Sha512WithEcdsa => "SHA512WITHECDSA",
            SigningAlgorithm::Sha256WithRsa => "SHA256WITHRSA",
            SigningAlgorithm::Sha384WithRsa => "SHA384WITHRSA",
            SigningAlgorithm::Sha512WithRsa => "SHA512WITHRSA",
        }
    }

    pub(crate) fn to_sdk(self) -> SdkSigningAlgorithm {
        match self {
            SigningAlgorithm::Sha256WithEcdsa => SdkSigningAlgorithm::Sha256Withecdsa,
            SigningAlgorithm::Sha384WithEcdsa => SdkSigningAlgorithm::Sha384Withecdsa,
            SigningAlgorithm::Sha512WithEcdsa => SdkSigningAlgorithm::Sha512Withecdsa,
            SigningAlgorithm::Sha256WithRsa => SdkSigningAlgorithm::Sha256Withrsa,
            SigningAlgorithm::Sha384WithRsa => SdkSigningAlgorithm::Sha384Withrsa,
            SigningAlgorithm::Sha512WithRsa => SdkSigningAlgorithm::Sha512Withrsa,
        }
    }

    fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SigningAlgorithm::Sha256WithEcdsa
                | SigningAlgorithm::Sha384WithEcdsa
                | SigningAlgorithm::Sha512WithEcdsa
        )
    }

    /// Whether a CA with `key` can sign with this algorithm.
    pub fn fits(self, key: CaKeyAlgorithm) -> bool {
        self.is_ecdsa() == key.is_ec()
    }
}

impl FromStr for SigningAlgorithm {
    type Err = String;

    /// AWS's name (`SHA256WITHECDSA`, …), as in the configuration file.
    fn from_str(name: &str) -> Result<SigningAlgorithm, String> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = SigningAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!("{name:?} is not one of {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests;

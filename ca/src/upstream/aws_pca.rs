//! AWS Private CA as the upstream: issues Halyard's intermediate from a CSR made here.
//!
//! One intermediate is `DescribeCertificateAuthority` (the CA is ACTIVE; the signing algorithm
//! that fits its key), `IssueCertificate` (the `SubordinateCACertificate_PathLen0/V1` template,
//! `Validity` ABSOLUTE, an `IdempotencyToken` derived from the CSR), then the SDK's
//! `wait_until_certificate_issued`, whose final poll is the `GetCertificate` answer. Every call
//! waits its turn at a local rate limit and is retried on throttling and network errors. The
//! certificate ARN is recorded in an [`IssuanceLedger`] as soon as PCA answers, so a CSR is never
//! sent twice, even across a restart.

mod chain;
mod config;
mod ledger;
mod retry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::client::Waiters;
use aws_sdk_acmpca::config::Credentials;
use aws_sdk_acmpca::config::retry::RetryConfig;
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    CertificateAuthorityStatus, CertificateAuthorityUsageMode, Validity, ValidityPeriodType,
};
use aws_smithy_runtime_api::client::waiters::error::WaiterError;
use halyard_proto::{SpiffeId, TrustDomain, validate_signing_cert};

use super::UpstreamError;
use super::rate::RateLimiter;
use crate::authority::{
    self, Authority, AuthorityError, Csr, KeyPolicy, Policy, PrivateKey, rfc3339,
};
use crate::files;
use retry::{AwsFailure, Retry, RetryPolicy, retrying};

pub use chain::{Expected, PcaChain, PcaChainError};
pub use config::{AwsPcaConfig, CaArn, CaKeyAlgorithm, DEFAULT_TEMPLATE_ARN, SigningAlgorithm};
pub use ledger::{DirLedger, IdempotencyToken, IssuanceLedger, MemoryLedger};
pub(crate) use retry::jitter;

/// How long one attempt waits for PCA to issue a certificate (it usually takes seconds).
const ISSUE_WAIT: Duration = Duration::from_secs(120);

/// The longest validity a CA in short-lived certificate mode issues.
const SHORT_LIVED_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Connection and per-attempt timeouts: a call that hangs is retried, not waited on forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A private CA's certificate mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageMode {
    /// Any validity; costs more per certificate.
    GeneralPurpose,
    /// Validity of at most 7 days; cheaper.
    ShortLivedCertificate,
}

/// What `DescribeCertificateAuthority` says about the CA, as far as issuing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaDescription {
    /// The CA's key.
    pub key_algorithm: CaKeyAlgorithm,
    /// The signing algorithm Halyard asks for: the configured one, or the one that fits the key.
    pub signing_algorithm: SigningAlgorithm,
    /// The CA's certificate mode.
    pub usage_mode: UsageMode,
    /// When the CA's own certificate expires, if AWS says.
    pub not_after: Option<SystemTime>,
}

/// An intermediate issued by PCA and checked: its chain and root, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedIntermediate {
    /// The certificate's ARN.
    pub certificate_arn: String,
    /// The idempotency token of its CSR (the key of its [`IssuanceLedger`] record).
    pub token: IdempotencyToken,
    /// The intermediate, PCA's intermediates above it, and the root.
    pub chain: PcaChain,
}

impl IssuedIntermediate {
    /// The authority that signs with this intermediate and `key`, the key whose CSR was issued.
    pub fn authority(&self, key: PrivateKey, policy: Policy) -> Result<Authority, AuthorityError> {
        Authority::new(key, self.chain.chain.clone(), policy)
    }

    /// The root the intermediate chains to, DER.
    pub fn root(&self) -> &[u8] {
        &self.chain.root
    }
}

/// A client for one AWS Private CA, issuing Halyard's intermediates.
#[derive(Debug)]
pub struct AwsPca {
    client: Client,
    config: AwsPcaConfig,
    extra_roots: Vec<Vec<u8>>,
    limiter: RateLimiter,
    retry: RetryPolicy,
    ledger: Arc<dyn IssuanceLedger>,
    /// One issuance at a time, so two requests for one CSR cannot both miss the ledger.
    issuing: tokio::sync::Mutex<()>,
}

impl AwsPca {
    /// A client with credentials from the standard AWS chain (environment, profile, web
    /// identity, container or instance role). Makes no call to AWS yet.
    pub async fn new(config: AwsPcaConfig) -> Result<AwsPca, UpstreamError> {
        let loader = aws_config::defaults(BehaviorVersion::latest());
        AwsPca::build(config, loader).await
    }

    /// A client with the given static credentials instead of the standard chain (for tests, and
    /// for callers that resolved credentials themselves).
    pub async fn with_credentials(
        config: AwsPcaConfig,
        credentials: Credentials,
    ) -> Result<AwsPca, UpstreamError> {
        let loader =
            aws_config::defaults(BehaviorVersion::latest()).credentials_provider(credentials);
        AwsPca::build(config, loader).await
    }

    async fn build(config: AwsPcaConfig, loader: ConfigLoader) -> Result<AwsPca, UpstreamError> {
        config.check()?;
        let extra_roots = load_extra_roots(&config)?;
        let sdk: SdkConfig = loader
            .region(Region::new(config.region().to_owned()))
            .http_client(https_client())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        // Retries are ours (retry.rs): each attempt then passes the rate limit and is logged.
        let mut client_config =
            aws_sdk_acmpca::config::Builder::from(&sdk).retry_config(RetryConfig::disabled());
        if let Some(url) = &config.endpoint_url {
            client_config = client_config.endpoint_url(url);
        }
        Ok(AwsPca {
            client: Client::from_conf(client_config.build()),
            limiter: RateLimiter::new(config.max_issue_rate),
            retry: RetryPolicy::default(),
            ledger: Arc::new(MemoryLedger::default()),
            issuing: tokio::sync::Mutex::new(()),
            extra_roots,
            config,
        })
    }

    /// The same client, remembering requested certificates in `ledger` (a [`DirLedger`] in the
    /// data directory survives restarts) instead of in memory.
    pub fn with_ledger(mut self, ledger: Arc<dyn IssuanceLedger>) -> AwsPca {
        self.ledger = ledger;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AwsPcaConfig {
        &self.config
    }

    /// The ledger of requested certificates.
    pub fn ledger(&self) -> &Arc<dyn IssuanceLedger> {
        &self.ledger
    }

    /// The trust bundle for an intermediate: its root, then the configured extra roots.
    pub fn bundle(&self, issued: &IssuedIntermediate) -> Vec<Vec<u8>> {
        let mut roots = vec![issued.root().to_vec()];
        for extra in &self.extra_roots {
            if !roots.contains(extra) {
                roots.push(extra.clone());
            }
        }
        roots
    }

    /// Asks PCA about the CA: refuses one that is not ACTIVE, or whose key or configured signing
    /// algorithm Halyard cannot use.
    #[tracing::instrument(skip_all, fields(ca = %self.config.ca_arn))]
    pub async fn describe(&self) -> Result<CaDescription, UpstreamError> {
        let request = self
            .client
            .describe_certificate_authority()
            .certificate_authority_arn(self.config.ca_arn.as_str());
        let output = retrying(
            "DescribeCertificateAuthority",
            &self.retry,
            &self.limiter,
            || {
                let request = request.clone();
                async move { request.send().await.map_err(|e| AwsFailure::from_sdk(&e)) }
            },
        )
        .await?;
        let ca_arn = self.config.ca_arn.to_string();
        let incomplete = |what: &str| UpstreamError::Aws {
            operation: "DescribeCertificateAuthority",
            code: "IncompleteResponse".into(),
            message: format!("the answer has no {what}"),
            attempts: 1,
            hint: "",
        };
        let ca = output
            .certificate_authority()
            .ok_or_else(|| incomplete("CertificateAuthority"))?;
        match ca.status() {
            Some(CertificateAuthorityStatus::Active) => {}
            status => {
                return Err(UpstreamError::CaNotActive {
                    ca_arn,
                    status: status
                        .map_or("of unknown status", |s| s.as_str())
                        .to_owned(),
                });
            }
        }
        let configuration = ca
            .certificate_authority_configuration()
            .ok_or_else(|| incomplete("CertificateAuthorityConfiguration"))?;
        let key_algorithm =
            CaKeyAlgorithm::from_sdk(configuration.key_algorithm()).map_err(|message| {
                UpstreamError::Algorithm {
                    ca_arn: ca_arn.clone(),
                    message,
                }
            })?;
        let signing_algorithm = match self.config.signing_algorithm {
            Some(algorithm) if !algorithm.fits(key_algorithm) => {
                return Err(UpstreamError::Algorithm {
                    ca_arn,
                    message: format!(
                        "signing_algorithm {} does not fit its {} key; use {} (or leave \
                         signing_algorithm out)",
                        algorithm.as_str(),
                        key_algorithm.as_str(),
                        key_algorithm.default_signing_algorithm().as_str()
                    ),
                });
            }
            Some(algorithm) => algorithm,
            None => key_algorithm.default_signing_algorithm(),
        };
        let usage_mode = match ca.usage_mode() {
            Some(CertificateAuthorityUsageMode::ShortLivedCertificate) => {
                UsageMode::ShortLivedCertificate
            }
            _ => UsageMode::GeneralPurpose,
        };
        Ok(CaDescription {
            key_algorithm,
            signing_algorithm,
            usage_mode,
            not_after: ca.not_after().and_then(|t| SystemTime::try_from(*t).ok()),
        })
    }

    /// Has PCA issue the intermediate whose CSR (PEM or DER, made by
    /// [`authority::intermediate_csr`]) is `csr`, valid until `not_after` (or the CA's own end, if
    /// sooner), and returns it checked: a CA for the CSR's key and trust domain that chains to
    /// the root PCA names.
    ///
    /// A CSR already issued (this ledger has its token) is fetched, not requested again. When
    /// the certificate is refused ([`UpstreamError::Chain`]) its record is forgotten: make a new
    /// key and CSR before trying again (after fixing `template_arn`, say).
    #[tracing::instrument(skip_all, fields(ca = %self.config.ca_arn))]
    pub async fn issue_intermediate(
        &self,
        csr: &[u8],
        not_after: SystemTime,
    ) -> Result<IssuedIntermediate, UpstreamError> {
        let (parsed, csr_pem, token) = parse_csr(csr)?;
        let trust_domain = intermediate_trust_domain(&parsed)?;
        let _one_at_a_time = self.issuing.lock().await;

        let ca = self.describe().await?;
        let not_after = validity(&ca, not_after, SystemTime::now())?;
        let recorded = self
            .ledger
            .lookup(&token)?
            .filter(|arn| self.config.ca_arn.issued(arn));
        let (certificate_arn, (certificate, chain)) = match recorded {
            Some(arn) => {
                tracing::info!(
                    certificate_arn = %arn,
                    %token,
                    "this CSR was issued before; fetching it"
                );
                match self.fetch(&arn).await {
                    Ok(fetched) => (arn, fetched),
                    // PCA does not know it (the CA was replaced, say): ask again.
                    Err(UpstreamError::Aws { code, .. }) if code == "ResourceNotFoundException" => {
                        tracing::warn!(
                            certificate_arn = %arn,
                            "recorded certificate not found; requesting it again"
                        );
                        self.ledger.forget(&token)?;
                        self.request_and_fetch(&csr_pem, &ca, not_after, &token)
                            .await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                self.request_and_fetch(&csr_pem, &ca, not_after, &token)
                    .await?
            }
        };
        let expected = Expected {
            spki: parsed.spki(),
            trust_domain: &trust_domain,
            not_after,
        };
        let chain = match PcaChain::from_pem(
            &certificate,
            chain.as_deref(),
            &expected,
            SystemTime::now(),
        ) {
            Ok(chain) => chain,
            Err(e) => {
                // Fetching it again would give the same certificate: forget it, so that the
                // next attempt (with a new key and CSR) asks PCA anew.
                self.ledger.forget(&token)?;
                return Err(e.into());
            }
        };
        tracing::info!(
            %certificate_arn,
            not_after = %rfc3339(chain.not_after),
            levels = chain.chain.len() + 1,
            "AWS Private CA issued the intermediate"
        );
        Ok(IssuedIntermediate {
            certificate_arn,
            token,
            chain,
        })
    }

    async fn request_and_fetch(
        &self,
        csr_pem: &str,
        ca: &CaDescription,
        not_after: SystemTime,
        token: &IdempotencyToken,
    ) -> Result<(String, (String, Option<String>)), UpstreamError> {
        let arn = self.request(csr_pem, ca, not_after, token).await?;
        self.ledger.record(token, &arn)?;
        let fetched = self.fetch(&arn).await?;
        Ok((arn, fetched))
    }

    /// `IssueCertificate`: the certificate's ARN.
    async fn request(
        &self,
        csr_pem: &str,
        ca: &CaDescription,
        not_after: SystemTime,
        token: &IdempotencyToken,
    ) -> Result<String, UpstreamError> {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let validity = Validity::builder()
            .r#type(ValidityPeriodType::Absolute)
            .value(secs)
            .build()
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        let request = self
            .client
            .issue_certificate()
            .certificate_authority_arn(self.config.ca_arn.as_str())
            .csr(Blob::new(csr_pem.as_bytes()))
            .signing_algorithm(ca.signing_algorithm.to_sdk())
            .template_arn(&self.config.template_arn)
            .validity(validity)
            .idempotency_token(token.as_str());
        tracing::info!(
            %token,
            signing_algorithm = ca.signing_algorithm.as_str(),
            not_after = %rfc3339(not_after),
            "requesting the intermediate from AWS Private CA"
        );
        let output = retrying("IssueCertificate", &self.retry, &self.limiter, || {
            let request = request.clone();
            async move { request.send().await.map_err(|e| AwsFailure::from_sdk(&e)) }
        })
        .await?;
        output
            .certificate_arn()
            .map(str::to_owned)
            .ok_or_else(|| UpstreamError::Aws {
                operation: "IssueCertificate",
                code: "IncompleteResponse".into(),
                message: "the answer has no CertificateArn".into(),
                attempts: 1,
                hint: "",
            })
    }

    /// `wait_until_certificate_issued`, whose final poll is `GetCertificate`'s answer:
    /// (Certificate, CertificateChain).
    async fn fetch(
        &self,
        certificate_arn: &str,
    ) -> Result<(String, Option<String>), UpstreamError> {
        let waiter = self
            .client
            .wait_until_certificate_issued()
            .certificate_authority_arn(self.config.ca_arn.as_str())
            .certificate_arn(certificate_arn);
        let polled = retrying("GetCertificate", &self.retry, &self.limiter, || {
            let waiter = waiter.clone();
            async move {
                match waiter.wait(ISSUE_WAIT).await {
                    Ok(poll) => poll
                        .into_result()
                        .map(Some)
                        .map_err(|e| AwsFailure::from_sdk(&e)),
                    // Not retried here: the ARN is in the ledger, a later call fetches it.
                    Err(WaiterError::ExceededMaxWait(_)) => Ok(None),
                    Err(WaiterError::OperationFailed(failed)) => {
                        Err(AwsFailure::from_sdk(failed.error()))
                    }
                    Err(WaiterError::FailureState(state)) => {
                        Err(match state.final_poll().as_result() {
                            Err(e) => AwsFailure::from_service(e, None),
                            Ok(_) => AwsFailure {
                                code: "WaiterFailure".into(),
                                message:
                                    "the certificate_issued waiter failed on a successful poll"
                                        .into(),
                                retry: Retry::Never,
                            },
                        })
                    }
                    Err(other) => Err(AwsFailure {
                        code: "WaiterFailure".into(),
                        message: other.to_string(),
                        retry: Retry::Never,
                    }),
                }
            }
        })
        .await?;
        let Some(output) = polled else {
            return Err(UpstreamError::NotIssuedInTime {
                certificate_arn: certificate_arn.to_owned(),
                waited: ISSUE_WAIT,
            });
        };
        let certificate =
            output
                .certificate()
                .map(str::to_owned)
                .ok_or_else(|| UpstreamError::Aws {
                    operation: "GetCertificate",
                    code: "IncompleteResponse".into(),
                    message: "the answer has no Certificate".into(),
                    attempts: 1,
                    hint: "",
                })?;
        Ok((certificate, output.certificate_chain().map(str::to_owned)))
    }
}

/// The notAfter to ask for: `wanted`, or the CA's own end if sooner; refused when it is not
/// in the future or longer than the CA's mode allows.
fn validity(
    ca: &CaDescription,
    wanted: SystemTime,
    now: SystemTime,
) -> Result<SystemTime, UpstreamError> {
    let mut not_after = wanted;
    if let Some(ca_end) = ca.not_after
        && ca_end < not_after
    {
        tracing::warn!(
            wanted = %rfc3339(wanted),
            ca_not_after = %rfc3339(ca_end),
            "the intermediate would outlive the PCA CA; it ends with the CA instead"
        );
        not_after = ca_end;
    }
    let lifetime = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    if lifetime < Duration::from_secs(60) {
        return Err(UpstreamError::Request(format!(
            "its notAfter {} is not in the future (the PCA CA ends {})",
            rfc3339(not_after),
            ca.not_after
                .map_or_else(|| "at an unknown time".into(), rfc3339)
        )));
    }
    if ca.usage_mode == UsageMode::ShortLivedCertificate && lifetime > SHORT_LIVED_MAX {
        return Err(UpstreamError::Request(format!(
            "it would be valid for {}s, but a CA in short-lived certificate mode issues \
             certificates valid for at most 7 days; lower intermediate_ttl",
            lifetime.as_secs()
        )));
    }
    Ok(not_after)
}

/// The SDK's HTTPS client on rustls with ring, the crypto the rest of Halyard uses (the SDK's
/// default would build aws-lc).
fn https_client() -> aws_sdk_acmpca::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The CSR parsed, as PEM (what PCA takes), and its idempotency token (over its DER, so that PEM
/// line breaks do not matter).
fn parse_csr(csr: &[u8]) -> Result<(Csr, String, IdempotencyToken), UpstreamError> {
    let parsed = Csr::parse(csr, &KeyPolicy::for_ca())?;
    let der = if csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem::parse(csr)
            .map_err(|e| UpstreamError::Request(format!("the CSR is not PEM: {e}")))?
            .into_contents()
    } else {
        csr.to_vec()
    };
    let pem = authority::pem_block("CERTIFICATE REQUEST", &der);
    Ok((parsed, pem, IdempotencyToken::for_csr(&der)))
}

/// The trust domain an intermediate CSR is for: its one URI SAN, `spiffe://<trust domain>`.
fn intermediate_trust_domain(csr: &Csr) -> Result<TrustDomain, UpstreamError> {
    let not_intermediate = |why: String| {
        UpstreamError::Request(format!(
            "the CSR {why}; an intermediate's CSR names exactly spiffe://<trust domain> \
             (authority::intermediate_csr makes one)"
        ))
    };
    match csr.uris() {
        [uri] => {
            let id = SpiffeId::new(uri).map_err(|e| {
                not_intermediate(format!("URI SAN {uri:?} is not a SPIFFE ID: {e}"))
            })?;
            if !id.is_trust_domain_id() {
                return Err(not_intermediate(format!("names {id}, which has a path")));
            }
            Ok(id.trust_domain().clone())
        }
        uris => Err(not_intermediate(format!("has {} URI SANs", uris.len()))),
    }
}

fn load_extra_roots(config: &AwsPcaConfig) -> Result<Vec<Vec<u8>>, UpstreamError> {
    let mut roots = Vec::new();
    for path in &config.extra_roots {
        let bad = |message: String| UpstreamError::ExtraRoot {
            path: path.clone(),
            message,
        };
        let pem = files::read_public(path).map_err(|e| bad(e.to_string()))?;
        for (index, der) in authority::certs_from_pem(&pem)
            .map_err(bad)?
            .into_iter()
            .enumerate()
        {
            let info = validate_signing_cert(&der)
                .map_err(|e| bad(format!("certificate {index} is not a usable CA: {e}")))?;
            if !info.is_self_issued() {
                return Err(bad(format!(
                    "certificate {index} is not a root: its issuer is not its subject"
                )));
            }
            roots.push(der);
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests;

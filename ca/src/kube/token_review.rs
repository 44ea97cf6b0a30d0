//! Service-account token authentication through the TokenReview API, cached.
//!
//! Istio's CA calls TokenReview for every CSR and is throttled by the API server under load (its
//! issue #27945); ztunnel presents one token for every pod of its node. Here one TokenReview
//! serves every request that presents the same token for the same audience until the token
//! expires (at most [`MAX_CACHE_LIFETIME`]), and concurrent requests for a token not yet reviewed
//! wait for one call instead of each making their own.
//!
//! The token's `exp` is read from its payload without verifying the signature: it only bounds how
//! long the API server's answer is reused. Everything else comes from the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use halyard_proto::{SpiffeId, TrustDomain};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use tracing::{debug, instrument};

/// The longest a TokenReview answer is reused: a token bound to a pod stops working when the pod
/// is deleted, and the cache should not stretch that by much.
pub const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// The most tokens remembered at once; beyond it, new answers are not cached.
const MAX_CACHE_ENTRIES: usize = 10_000;
/// Longer tokens are refused without asking the API server (service-account tokens are ~1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The `extra` key under which the API server names the node of the pod a token is bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The `extra` key naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The `extra` key with the uid of the pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts, or longer than any service-account token.
    #[error("bearer token is not a Kubernetes service-account JWT: {0}")]
    Malformed(&'static str),
    /// The API server did not authenticate the token.
    #[error("service-account token not authenticated by the Kubernetes API server: {0}")]
    NotAuthenticated(String),
    /// The token is valid, but not for this audience.
    #[error("service-account token is not valid for audience {audience:?}: {detail}")]
    WrongAudience {
        /// The audience required.
        audience: String,
        /// What the API server said.
        detail: String,
    },
    /// The token authenticates a user that is not a service account.
    #[error(
        "token authenticates {0:?}, which is not a service account (system:serviceaccount:<ns>:<name>)"
    )]
    NotServiceAccount(String),
    /// The service account's name does not make a SPIFFE ID.
    #[error("service account {account}: cannot form a SPIFFE ID: {reason}")]
    BadIdentity {
        /// `namespace/name`.
        account: String,
        /// Why.
        reason: String,
    },
    /// A node credential whose token is not bound to a pod on a node.
    #[error(
        "service-account token of {0} names no node ({NODE_NAME_EXTRA}): use a projected token \
         of the agent's pod (Kubernetes 1.30 or later)"
    )]
    NoNodeName(String),
    /// A node credential from a service account that is not the agent's.
    #[error("service account {0} may not attest nodes: only kubernetes.agent_service_accounts may")]
    NotAnAgent(String),
    /// The TokenReview call itself failed.
    #[error("TokenReview failed: {0}")]
    Api(String),
}

/// A Kubernetes service account, as the API server vouched for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spiffe://<td>/ns/<namespace>/sa/<name>`.
    pub spiffe_id: SpiffeId,
    /// The node of the pod the token is bound to, when it is bound to one.
    pub node_name: Option<String>,
    /// The pod the token is bound to, when it is bound to one.
    pub pod_name: Option<String>,
    /// That pod's uid, when the API server gives it.
    pub pod_uid: Option<String>,
}

impl ServiceAccount {
    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// With which audiences tokens are reviewed, and which service accounts may attest nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The audience of tokens on Istio's CSR API (`istio-ca` by default).
    pub istio_audience: String,
    /// The audience of node agents' tokens (`halyard-ca` by default).
    pub node_audience: String,
    /// The agent's service accounts, as `namespace/name`.
    pub agent_service_accounts: Vec<String>,
}

/// Authenticates service-account tokens with the TokenReview API; cheap to share.
pub struct TokenReviewer {
    client: kube::Client,
    trust_domain: TrustDomain,
    policy: TokenPolicy,
    cache: Mutex<HashMap<CacheKey, Arc<Slot>>>,
}

type CacheKey = ([u8; 32], String);

/// One token's answer, filled by the first request that needs it.
#[derive(Default)]
struct Slot {
    reviewed: OnceCell<Reviewed>,
}

struct Reviewed {
    account: ServiceAccount,
    valid_until: SystemTime,
}

impl TokenReviewer {
    /// A reviewer over `client`, issuing identities in `trust_domain`.
    pub fn new(client: kube::Client, trust_domain: TrustDomain, policy: TokenPolicy) -> Self {
        TokenReviewer {
            client,
            trust_domain,
            policy,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of Istio's CSR API that presented `token` (audience [`TokenPolicy::istio_audience`]).
    pub async fn istio_caller(&self, token: &SecretString) -> Result<ServiceAccount, TokenError> {
        self.review(token, &self.policy.istio_audience, SystemTime::now())
            .await
    }

    /// The node of a node agent that presented `token` (audience [`TokenPolicy::node_audience`]): the
    /// token must belong to one of the agent's service accounts and be bound to a pod on a node.
    pub async fn agent_node(&self, token: &SecretString) -> Result<String, TokenError> {
        let account = self.agent_account(token).await?;
        let qualified = account.qualified_name();
        account.node_name.ok_or(TokenError::NoNodeName(qualified))
    }

    /// The agent's service account that presented `token` (audience
    /// [`TokenPolicy::node_audience`]), with the pod and node the token is bound to as far as
    /// the API server names them (before Kubernetes 1.30 only the pod: see
    /// [`crate::kube::PodIndex::node_of`]).
    pub async fn agent_account(&self, token: &SecretString) -> Result<ServiceAccount, TokenError> {
        let account = self
            .review(token, &self.policy.node_audience, SystemTime::now())
            .await?;
        let qualified = account.qualified_name();
        if !self.policy.agent_service_accounts.contains(&qualified) {
            return Err(TokenError::NotAnAgent(qualified));
        }
        Ok(account)
    }

    /// The service account `token` authenticates for `audience`, as of `now`: from the cache
    /// when an earlier review of the same token and audience is still good.
    #[instrument(skip_all, fields(audience = %audience))]
    pub async fn review(
        &self,
        token: &SecretString,
        audience: &str,
        now: SystemTime,
    ) -> Result<ServiceAccount, TokenError> {
        let token = token.expose_secret();
        let expires = unverified_expiry(token)?;
        let slot = self.slot(token, audience, now);
        let reviewed = slot
            .reviewed
            .get_or_try_init(|| async {
                let account = self.call_api(token, audience).await?;
                let valid_until = expires
                    .unwrap_or(now + MAX_CACHE_LIFETIME)
                    .min(now + MAX_CACHE_LIFETIME);
                Ok::<_, TokenError>(Reviewed {
                    account,
                    valid_until,
                })
            })
            .await;
        match reviewed {
            Ok(reviewed) => Ok(reviewed.account.clone()),
            Err(e) => {
                // Refusals are not remembered: the next request asks again.
                self.forget(token, audience, &slot);
                Err(e)
            }
        }
    }

    /// The cache slot for `token` and `audience`: a fresh one when there is none or the one
    /// there has expired.
    fn slot(&self, token: &str, audience: &str, now: SystemTime) -> Arc<Slot> {
        let key = cache_key(token, audience);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = cache.get(&key) {
            match slot.reviewed.get() {
                Some(reviewed) if reviewed.valid_until <= now => {}
                _ => return slot.clone(),
            }
        }
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, slot| {
                slot.reviewed
                    .get()
                    .is_some_and(|reviewed| reviewed.valid_until > now)
                    || Arc::strong_count(slot) > 1
            });
        }
        let slot = Arc::new(Slot::default());
        if cache.len() < MAX_CACHE_ENTRIES {
            cache.insert(key, slot.clone());
        }
        slot
    }

    fn forget(&self, token: &str, audience: &str, slot: &Arc<Slot>) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = cache_key(token, audience);
        if cache
            .get(&key)
            .is_some_and(|cached| Arc::ptr_eq(cached, slot) && cached.reviewed.get().is_none())
        {
            cache.remove(&key);
        }
    }

    async fn call_api(&self, token: &str, audience: &str) -> Result<ServiceAccount, TokenError> {
        debug!(audience, "TokenReview");
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![audience.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| TokenError::Api(e.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        let detail = status.error.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(if detail.contains("audience") {
                TokenError::WrongAudience {
                    audience: audience.to_owned(),
                    detail,
                }
            } else if detail.is_empty() {
                TokenError::NotAuthenticated("no reason given".to_owned())
            } else {
                TokenError::NotAuthenticated(detail)
            });
        }
        // An API server that is not audience-aware returns none: such an answer proves nothing
        // about the audience.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|granted| granted.iter().any(|a| a == audience))
        {
            return Err(TokenError::WrongAudience {
                audience: audience.to_owned(),
                detail: format!(
                    "the API server granted audiences {:?}",
                    status.audiences.unwrap_or_default()
                ),
            });
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| {
            extra
                .get(key)
                .and_then(|values| values.first())
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let mut account = service_account(&username, &self.trust_domain)?;
        account.node_name = first(NODE_NAME_EXTRA);
        account.pod_name = first(POD_NAME_EXTRA);
        account.pod_uid = first(POD_UID_EXTRA);
        Ok(account)
    }
}

/// The service account `username` (`system:serviceaccount:<ns>:<name>`) names, with its SPIFFE
/// ID in `trust_domain`.
pub fn service_account(
    username: &str,
    trust_domain: &TrustDomain,
) -> Result<ServiceAccount, TokenError> {
    let not_sa = || TokenError::NotServiceAccount(username.to_owned());
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(not_sa)?;
    let (namespace, name) = rest.split_once(':').ok_or_else(not_sa)?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return Err(not_sa());
    }
    let spiffe_id =
        SpiffeId::from_segments(trust_domain, &["ns", namespace, "sa", name]).map_err(|e| {
            TokenError::BadIdentity {
                account: format!("{namespace}/{name}"),
                reason: e.to_string(),
            }
        })?;
    Ok(ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        spiffe_id,
        node_name: None,
        pod_name: None,
        pod_uid: None,
    })
}

/// The `exp` claim of a JWT, read without verifying anything: `None` when the token has none
/// (legacy secret-based tokens). Refuses what cannot be a JWT at all.
pub fn unverified_expiry(token: &str) -> Result<Option<SystemTime>, TokenError> {
    const BASE64URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let payload = BASE64URL
        .decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    let claims: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("payload is not JSON"))?;
    let Some(claims) = claims.as_object() else {
        return Err(TokenError::Malformed("payload is not a JSON object"));
    };
    let exp = match claims.get("exp") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(exp) => exp
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .ok_or(TokenError::Malformed("exp is not a number of seconds"))?,
    };
    // Far-future values saturate instead of overflowing; the cache caps the lifetime anyway.
    let secs = Duration::try_from_secs_f64(exp).unwrap_or(Duration::from_secs(u64::MAX / 4));
    Ok(SystemTime::UNIX_EPOCH.checked_add(secs))
}

fn cache_key(token: &str, audience: &str) -> CacheKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    (hash, audience.to_owned())
}

#[cfg(test)]
mod tests;

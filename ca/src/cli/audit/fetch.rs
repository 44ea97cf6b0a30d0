//! Fetching CRLs from a running CA's HTTP listener: `GET <base>/<authority id>.crl`, the URL the
//! CA puts in its leaves' CRL distribution point when `crl_base_url` is set.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one fetch may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest CRL read (a CRL of a million serials is about 40 MB).
const MAX_CRL_BYTES: usize = 64 << 20;

/// The `--crl-url` value: an `http://` URL with a host, without a trailing slash.
#[derive(Clone, Debug)]
pub(super) struct CrlBase(String);

impl std::str::FromStr for CrlBase {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let base = text.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!(
                "{text:?} is not an http:// URL (the CA serves its CRLs over plain HTTP, \
                 e.g. http://127.0.0.1:9090/crl)"
            ));
        }
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{text:?} has no host"));
        }
        if uri.query().is_some() {
            return Err(format!(
                "{text:?} has a query: give the base the CRL names follow"
            ));
        }
        Ok(CrlBase(base.to_owned()))
    }
}

/// Fetches CRLs under one base URL.
pub(super) struct CrlFetcher {
    base: CrlBase,
    client: Client<HttpConnector, Body>,
}

impl CrlFetcher {
    pub(super) fn new(base: CrlBase) -> CrlFetcher {
        CrlFetcher {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The URL of authority `id`'s CRL.
    pub(super) fn url(&self, id: &str) -> String {
        format!("{}/{id}.crl", self.base.0)
    }

    /// The CRL of authority `id` (DER), `Ok(None)` when the CA has none for it (404).
    pub(super) async fn fetch(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        let url = self.url(id);
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(format!("GET {url}: HTTP {status}"));
            }
            let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_CRL_BYTES)
                .await
                .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
            Ok(Some(body.to_vec()))
        };
        tokio::time::timeout(TIMEOUT, fetch)
            .await
            .map_err(|_| format!("GET {url}: no answer within {}s", TIMEOUT.as_secs()))?
    }
}

//! Which AWS failures are worth retrying, how long to wait before the next attempt, and the
//! retry loop itself (the SDK's own retries are turned off, so that every attempt passes the
//! local rate limit and is logged here).

use std::future::Future;
use std::time::Duration;

use aws_sdk_acmpca::config::http::HttpResponse;
use aws_sdk_acmpca::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::time::Instant;

use crate::upstream::UpstreamError;
use crate::upstream::rate::RateLimiter;

/// Error codes AWS uses for throttling (the SDK's own list, plus PCA's).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes for failures on AWS's side that a later attempt may not meet.
const TRANSIENT: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "IDPCommunicationError",
];

/// Whether, and why, a failed call may be made again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// AWS throttled the call.
    Throttled,
    /// A network failure, a timeout or a server-side error.
    Transient,
    /// Retrying would fail the same way.
    Never,
}

/// One failed AWS call, reduced to what is logged and reported: no request, no credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AwsFailure {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) retry: Retry,
}

impl AwsFailure {
    /// From an SDK error.
    pub(crate) fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> AwsFailure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let local = |code: &str, retry| AwsFailure {
            code: code.to_owned(),
            message: DisplayErrorContext(err).to_string(),
            retry,
        };
        match err {
            SdkError::ServiceError(context) => {
                AwsFailure::from_service(context.err(), Some(context.raw().status().as_u16()))
            }
            SdkError::TimeoutError(_) => local("Timeout", Retry::Transient),
            SdkError::DispatchFailure(failure) if failure.is_user() => {
                local("DispatchFailure", Retry::Never)
            }
            SdkError::DispatchFailure(_) => local("DispatchFailure", Retry::Transient),
            // A response that could not be read (cut off, say): the next one may be whole.
            SdkError::ResponseError(_) => local("ResponseError", Retry::Transient),
            _ => local("ConstructionFailure", Retry::Never),
        }
    }

    /// From a service error, with the HTTP status when known.
    pub(crate) fn from_service(err: &impl ProvideErrorMetadata, status: Option<u16>) -> AwsFailure {
        // An error without a code is one no AWS service made (a proxy, a crashed endpoint):
        // name it by its HTTP status.
        let code = match (err.code(), status) {
            (Some(code), _) => code.to_owned(),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => "Unknown".to_owned(),
        };
        AwsFailure {
            retry: classify(&code, status),
            message: err
                .message()
                .unwrap_or("the response carries no error message")
                .to_owned(),
            code,
        }
    }
}

/// Whether a service error with `code` (and HTTP `status`) may be retried.
pub(crate) fn classify(code: &str, status: Option<u16>) -> Retry {
    if THROTTLING.contains(&code) || status == Some(429) {
        Retry::Throttled
    } else if TRANSIENT.contains(&code) || status.is_some_and(|s| (500..600).contains(&s)) {
        Retry::Transient
    } else {
        Retry::Never
    }
}

/// What usually causes an error that has one usual cause.
pub(crate) fn hint(code: &str) -> &'static str {
    match code {
        "AccessDeniedException" => {
            "; the role Halyard runs as needs acm-pca:DescribeCertificateAuthority, \
             acm-pca:IssueCertificate and acm-pca:GetCertificate on this CA"
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "ExpiredTokenException" => {
            "; check the AWS credentials (environment, profile, IRSA web identity token)"
        }
        "ResourceNotFoundException" | "InvalidArnException" => {
            "; check ca_arn and region: the CA must exist in that account and region"
        }
        "InvalidStateException" => "; the CA is not ACTIVE",
        "MalformedCSRException" => "; PCA refused the intermediate's CSR",
        "InvalidArgsException" => {
            "; check template_arn, signing_algorithm and intermediate_ttl against the CA \
             (its key type, its own validity, short-lived certificate mode's 7-day limit)"
        }
        "DispatchFailure" => "; check endpoint_url, the network path to PCA and credentials",
        _ => "",
    }
}

/// How one call is retried: equal-jitter exponential backoff, bounded in attempts and time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    /// Most attempts in all.
    pub(crate) max_attempts: u32,
    /// The first backoff's upper bound.
    pub(crate) base: Duration,
    /// No backoff is longer.
    pub(crate) cap: Duration,
    /// No retry starts after this much time since the first attempt.
    pub(crate) budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(20),
            budget: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): half of
    /// `min(cap, base · 2^(retry-1))` plus `jitter` (in [0, 1)) of the other half, so that callers
    /// throttled together do not come back together, yet each waits at least half the step.
    pub(crate) fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.cap);
        exp / 2 + (exp / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) for jitter (not secret; ring's generator because it is already here).
pub(crate) fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// Makes `call` (AWS `operation`) until it succeeds, fails for good, or the policy's attempts
/// or time run out, each attempt after its turn at `limiter`. The first failure is logged at
/// warn, later ones at debug.
pub(crate) async fn retrying<T, F, Fut>(
    operation: &'static str,
    policy: &RetryPolicy,
    limiter: &RateLimiter,
    mut call: F,
) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsFailure>>,
{
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        limiter.acquire().await;
        attempts += 1;
        let failure = match call().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(
                        operation,
                        attempts,
                        "AWS Private CA call succeeded after retries"
                    );
                }
                return Ok(value);
            }
            Err(failure) => failure,
        };
        let delay = policy.backoff(attempts, jitter());
        let retry = failure.retry != Retry::Never
            && attempts < policy.max_attempts
            && start.elapsed() + delay <= policy.budget;
        if !retry {
            tracing::warn!(
                operation,
                code = %failure.code,
                message = %failure.message,
                attempts,
                "AWS Private CA call failed"
            );
            return Err(UpstreamError::Aws {
                operation,
                hint: hint(&failure.code),
                code: failure.code,
                message: failure.message,
                attempts,
            });
        }
        if attempts == 1 {
            tracing::warn!(
                operation,
                code = %failure.code,
                message = %failure.message,
                retry_in = ?delay,
                "AWS Private CA call failed; retrying with backoff"
            );
        } else {
            tracing::debug!(
                operation,
                code = %failure.code,
                attempts,
                retry_in = ?delay,
                "AWS Private CA call failed again; retrying"
            );
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests;

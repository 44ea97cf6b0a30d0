use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn failure(code: &str, retry: Retry) -> AwsFailure {
    AwsFailure {
        code: code.into(),
        message: format!("{code} happened"),
        retry,
    }
}

fn limiter() -> RateLimiter {
    RateLimiter::new(NonZeroU32::new(1000).unwrap())
}

#[test]
fn codes_are_classified() {
    assert_eq!(classify("ThrottlingException", Some(400)), Retry::Throttled);
    assert_eq!(classify("Whatever", Some(429)), Retry::Throttled);
    assert_eq!(classify("InternalFailure", Some(500)), Retry::Transient);
    assert_eq!(classify("Unknown", Some(503)), Retry::Transient);
    assert_eq!(classify("ServiceUnavailable", None), Retry::Transient);
    assert_eq!(classify("AccessDeniedException", Some(400)), Retry::Never);
    assert_eq!(classify("MalformedCSRException", Some(400)), Retry::Never);
    assert_eq!(classify("InvalidStateException", None), Retry::Never);
}

#[test]
fn hints_name_what_to_check() {
    assert!(hint("AccessDeniedException").contains("acm-pca:IssueCertificate"));
    assert!(hint("ResourceNotFoundException").contains("ca_arn"));
    assert_eq!(hint("SomethingElse"), "");
}

#[test]
fn backoff_grows_is_capped_and_keeps_half() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
        budget: Duration::from_secs(60),
    };
    assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(100));
    assert_eq!(policy.backoff(1, 1.0), Duration::from_millis(200));
    assert_eq!(policy.backoff(2, 0.0), Duration::from_millis(200));
    assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(600));
    assert_eq!(policy.backoff(10, 0.0), Duration::from_secs(1));
    assert_eq!(policy.backoff(60, 1.0), Duration::from_secs(2));
    assert_eq!(
        policy.backoff(1, 7.0),
        Duration::from_millis(200),
        "jitter is clamped"
    );
}

#[test]
fn jitter_is_in_range() {
    for _ in 0..100 {
        let j = jitter();
        assert!((0.0..1.0).contains(&j), "{j}");
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_until_it_succeeds() {
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let result = retrying(
        "IssueCertificate",
        &RetryPolicy::default(),
        &limiter(),
        || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(failure("ThrottlingException", Retry::Throttled))
                } else {
                    Ok("arn")
                }
            }
        },
    )
    .await;
    assert_eq!(result.unwrap(), "arn");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Three backoffs of at least half of 250 ms, 500 ms, 1 s.
    assert!(
        start.elapsed() >= Duration::from_millis(875),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let calls = AtomicU32::new(0);
    let err = retrying(
        "IssueCertificate",
        &RetryPolicy::default(),
        &limiter(),
        || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(failure("AccessDeniedException", Retry::Never)) }
        },
    )
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let message = err.to_string();
    assert!(
        message.starts_with(
            "AWS Private CA IssueCertificate failed with AccessDeniedException: \
             AccessDeniedException happened (after 1 attempt(s)); the role"
        ),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_attempt_limit() {
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let calls = AtomicU32::new(0);
    let err = retrying("GetCertificate", &policy, &limiter(), || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(failure("DispatchFailure", Retry::Transient)) }
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(
        matches!(err, UpstreamError::Aws { attempts: 3, ref code, .. } if code == "DispatchFailure"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_time_budget() {
    let policy = RetryPolicy {
        max_attempts: 1000,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(4),
        budget: Duration::from_secs(10),
    };
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    retrying("IssueCertificate", &policy, &limiter(), || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(failure("ThrottlingException", Retry::Throttled)) }
    })
    .await
    .unwrap_err();
    assert!(
        start.elapsed() <= Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(calls.load(Ordering::SeqCst) < 10);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_waits_for_the_rate_limit() {
    let limiter = RateLimiter::new(NonZeroU32::new(1).unwrap());
    let policy = RetryPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    retrying("IssueCertificate", &policy, &limiter, || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err(failure("ThrottlingException", Retry::Throttled))
            } else {
                Ok(())
            }
        }
    })
    .await
    .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_service_error_without_a_code_is_named_by_its_status() {
    let meta = aws_sdk_acmpca::error::ErrorMetadata::builder().build();
    let failure = AwsFailure::from_service(&meta, Some(502));
    assert_eq!(failure.code, "HTTP 502");
    assert_eq!(failure.retry, Retry::Transient);
    let meta = aws_sdk_acmpca::error::ErrorMetadata::builder()
        .code("ThrottlingException")
        .message("Rate exceeded")
        .build();
    let failure = AwsFailure::from_service(&meta, Some(400));
    assert_eq!(
        (
            failure.code.as_str(),
            failure.message.as_str(),
            failure.retry
        ),
        ("ThrottlingException", "Rate exceeded", Retry::Throttled)
    );
}

//! Requests through a client Envoy while something changes underneath, each over a new TLS
//! handshake (`EnvoyConfig::handshake_per_request`): none may fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::envoy::Envoy;

/// The pace of the requests through the client Envoy.
pub const TRAFFIC_EVERY: Duration = Duration::from_millis(20);
/// How long the traffic runs before the first step and after the last.
pub const TRAFFIC_AROUND: Duration = Duration::from_millis(500);

/// One request through the client Envoy that did not get its 200.
struct Failure {
    after: Duration,
    what: String,
}

/// Requests through `client` every [`TRAFFIC_EVERY`] until `stop`, each expecting a 200 from a
/// server that saw `peer_id`: how many, and the failures.
fn send_until(
    client: &Envoy,
    peer_id: &str,
    stop: &AtomicBool,
    start: Instant,
) -> (usize, Vec<Failure>) {
    let mut sent = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let at = start.elapsed();
        match client.get("/") {
            Ok(r) if r.status == 200 && r.header("x-peer-spiffe-id") == Some(peer_id) => {}
            Ok(r) => failures.push(Failure {
                after: at,
                what: format!("{} {:?}", r.status, r.body),
            }),
            Err(e) => failures.push(Failure {
                after: at,
                what: e.to_string(),
            }),
        }
        sent += 1;
        std::thread::sleep(TRAFFIC_EVERY);
    }
    (sent, failures)
}

/// Sets the flag when dropped, also while unwinding, so the traffic thread always ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `steps` while requests flow through `client` (the server answering shows the client's
/// SPIFFE ID, `peer_id`, in `x-peer-spiffe-id`) and returns what `steps` returned. Panics if
/// any request failed, with `logs()` (the processes' logs) in the message, or if the client
/// did not open a new connection for each request.
pub fn under_traffic<T>(
    client: &Envoy,
    peer_id: &str,
    logs: impl FnOnce() -> String,
    steps: impl FnOnce() -> T,
) -> T {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let connections_before = client.stat("cluster.upstream.upstream_cx_total");
    let (sent, failures, result) = std::thread::scope(|scope| {
        let stopper = StopOnDrop(&stop);
        let traffic = scope.spawn(|| send_until(client, peer_id, &stop, start));
        std::thread::sleep(TRAFFIC_AROUND);
        let result = steps();
        std::thread::sleep(TRAFFIC_AROUND);
        drop(stopper);
        let (sent, failures) = traffic
            .join()
            .unwrap_or_else(|_| panic!("the traffic thread panicked"));
        (sent, failures, result)
    });
    let connections = client.stat("cluster.upstream.upstream_cx_total") - connections_before;
    let failed: Vec<String> = failures
        .iter()
        .map(|f| format!("{:?} after the traffic started: {}", f.after, f.what))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests through the client Envoy failed: {failed:#?}\n{}",
        failures.len(),
        logs()
    );
    assert!(
        usize::try_from(connections).unwrap_or(usize::MAX) >= sent,
        "each request should have been a new handshake: {connections} connections for {sent} \
         requests"
    );
    eprintln!(
        "{sent} requests through the client Envoy over {:?}, each a new TLS handshake: all 200",
        start.elapsed()
    );
    result
}

use std::time::Duration;

use super::*;

const NODE: Rate = Rate {
    per_second: 10.0,
    burst: 20.0,
};
/// Two a minute, five at once.
const IDENTITY: Rate = Rate {
    per_second: 2.0 / 60.0,
    burst: 5.0,
};

fn limits(start: Instant) -> Limits {
    Limits::new(4, NODE, IDENTITY, start)
}

fn take_n(limits: &Limits, n: usize, node: &str, identity: &str, at: Instant) -> Vec<bool> {
    (0..n)
        .map(|_| limits.take(Some(node), Some(identity), at).is_ok())
        .collect()
}

#[test]
fn a_node_gets_its_burst_then_its_rate() {
    let start = Instant::now();
    let limits = limits(start);
    for i in 0..20 {
        assert_eq!(limits.take(Some("a"), None, start), Ok(()), "{i}");
    }
    assert_eq!(limits.take(Some("a"), None, start), Err(Spent::Node));
    assert_eq!(
        limits.take(Some("b"), None, start),
        Ok(()),
        "other nodes have their own budget"
    );
    let later = start + Duration::from_millis(500);
    for i in 0..5 {
        assert_eq!(limits.take(Some("a"), None, later), Ok(()), "{i}");
    }
    assert_eq!(limits.take(Some("a"), None, later), Err(Spent::Node));
}

#[test]
fn an_identity_gets_its_burst_then_its_rate_whatever_the_node() {
    let start = Instant::now();
    let limits = limits(start);
    assert_eq!(take_n(&limits, 3, "n1", "web", start), [true; 3]);
    assert_eq!(take_n(&limits, 2, "n2", "web", start), [true; 2]);
    assert_eq!(
        limits.take(Some("n3"), Some("web"), start),
        Err(Spent::Identity),
        "the budget is the identity's, across nodes"
    );
    assert_eq!(limits.take(None, Some("web"), start), Err(Spent::Identity));
    assert_eq!(
        take_n(&limits, 5, "n1", "api", start),
        [true; 5],
        "another identity has its own budget"
    );
    // Two a minute: one more after 45 s, not two.
    let later = start + Duration::from_secs(45);
    assert_eq!(take_n(&limits, 2, "n1", "web", later), [true, false]);
}

#[test]
fn a_refusal_charges_neither_budget() {
    let start = Instant::now();
    let limits = limits(start);
    assert_eq!(take_n(&limits, 5, "n1", "web", start), [true; 5]);
    // Fifteen refusals for the spent identity cost the node nothing...
    for _ in 0..15 {
        assert_eq!(
            limits.take(Some("n1"), Some("web"), start),
            Err(Spent::Identity)
        );
    }
    for identity in ["api", "db", "cache"] {
        assert_eq!(
            take_n(&limits, 5, "n1", identity, start),
            [true; 5],
            "the node still has 15 of its 20"
        );
    }
    assert_eq!(
        limits.take(Some("n1"), Some("queue"), start),
        Err(Spent::Node)
    );
    // ...and a node refusal costs the identity nothing.
    assert_eq!(
        take_n(&limits, 5, "n2", "queue", start),
        [true; 5],
        "queue was not charged when n1 was refused"
    );
}

#[test]
fn full_buckets_are_dropped_and_spent_ones_kept() {
    let start = Instant::now();
    let limits = limits(start);
    for i in 0..1000 {
        limits
            .take(Some(&format!("node-{i}")), Some(&format!("id-{i}")), start)
            .unwrap();
    }
    assert_eq!(take_n(&limits, 5, "n", "busy", start), [true; 5]);
    assert_eq!(limits.kept(), (1001, 1001));

    // Node buckets refill in 2 s: the next charge after that sweeps every refilled one.
    let t = start + Duration::from_secs(3);
    limits.take(Some("n"), None, t).unwrap();
    assert_eq!(limits.kept(), (1, 1001), "only the node just charged");

    // Identity buckets refill in 150 s (5 at 2 a minute): at 160 s every one is full and goes.
    let t = start + Duration::from_secs(160);
    limits.take(None, Some("other"), t).unwrap();
    assert_eq!(limits.kept().1, 1, "only the bucket just charged");

    // A bucket still refilling at a sweep is kept, with what it has.
    assert_eq!(take_n(&limits, 5, "n", "busy", t), [true; 5]);
    let t = t + Duration::from_secs(100);
    assert_eq!(
        take_n(&limits, 3, "n", "busy", t),
        [true; 3],
        "3.3 refilled"
    );
    let t = t + Duration::from_secs(60);
    limits.take(None, Some("third"), t).unwrap();
    assert_eq!(limits.kept().1, 2, "busy and third; other was full");
    assert_eq!(
        take_n(&limits, 3, "n", "busy", t),
        [true, true, false],
        "0.3 + 60 s at 2 a minute: 2, not a fresh burst"
    );
}

#[test]
fn dropping_a_bucket_never_grants_more_than_its_rate() {
    // Whatever the sweeps do, over a long run an identity gets its burst plus its rate.
    let start = Instant::now();
    let limits = limits(start);
    let mut granted = 0u32;
    for second in 0..600 {
        let now = start + Duration::from_secs(second);
        // Other identities come and go, driving sweeps.
        limits
            .take(None, Some(&format!("passing-{second}")), now)
            .unwrap();
        for _ in 0..3 {
            if limits.take(None, Some("hammer"), now).is_ok() {
                granted += 1;
            }
        }
    }
    // 5 at once, then 2 a minute for the 599 s after the first second.
    let most = 5 + (599.0 * 2.0 / 60.0) as u32;
    assert!(
        granted <= most && granted >= most - 1,
        "{granted} vs {most}"
    );
}

#[test]
fn in_flight_slots_run_out_and_come_back() {
    let limits = Limits::new(2, NODE, IDENTITY, Instant::now());
    let a = limits.slot();
    let b = limits.slot();
    assert!(a.is_some() && b.is_some());
    assert!(limits.slot().is_none());
    drop(a);
    assert!(limits.slot().is_some());
}

#[test]
fn a_rate_refills_an_empty_bucket_in_burst_over_rate() {
    assert_eq!(NODE.refill_period(), Duration::from_secs(2));
    assert_eq!(IDENTITY.refill_period(), Duration::from_secs(150));
    assert_eq!(
        Rate::new(1.0, 1000).refill_period(),
        Duration::from_secs(1000)
    );
}

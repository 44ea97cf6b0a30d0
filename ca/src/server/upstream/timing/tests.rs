use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn lifetimes(start: u64, end: u64, successor: Option<(&str, bool)>) -> Lifetimes {
    Lifetimes {
        start: at(start),
        end: at(end),
        successor: successor.map(|(id, usable_here)| Successor {
            id: id.to_owned(),
            usable_here,
        }),
        signs_elsewhere: false,
    }
}

#[test]
fn prepare_at_half_and_activate_at_five_sixths_of_the_life() {
    assert_eq!(prepare_at(at(0), at(600)), at(300));
    assert_eq!(activate_at(at(0), at(600)), at(500));
    assert_eq!(prepare_at(at(100), at(700)), at(400));
    assert_eq!(activate_at(at(100), at(700)), at(600));
    // Seven days: ½ is 3.5 days, ⅚ is 5 days 20 hours.
    let week = 7 * 86_400;
    assert_eq!(prepare_at(at(0), at(week)), at(week / 2));
    assert_eq!(activate_at(at(0), at(week)), at(5 * 86_400 + 20 * 3600));
    // Lives that do not divide evenly lose no more than the rounding.
    let odd = activate_at(at(0), at(7));
    assert_eq!(
        odd.duration_since(at(0)).unwrap(),
        Duration::from_nanos(5_833_333_333)
    );
}

#[test]
fn an_upside_down_life_acts_at_its_start() {
    assert_eq!(prepare_at(at(500), at(100)), at(500));
    assert_eq!(activate_at(at(500), at(500)), at(500));
    assert_eq!(
        next_step(&lifetimes(500, 100, None), at(500)),
        Step::Prepare
    );
}

#[test]
fn waits_for_half_life_then_prepares() {
    let young = lifetimes(0, 600, None);
    assert_eq!(next_step(&young, at(0)), Step::Wait(at(300)));
    assert_eq!(next_step(&young, at(299)), Step::Wait(at(300)));
    assert_eq!(next_step(&young, at(300)), Step::Prepare);
    // Still none at ⅚ (preparing failed so far), or past the end: keep preparing.
    assert_eq!(next_step(&young, at(550)), Step::Prepare);
    assert_eq!(next_step(&young, at(700)), Step::Prepare);
}

#[test]
fn with_a_successor_waits_for_five_sixths_then_activates_it() {
    let prepared = lifetimes(0, 600, Some(("b", true)));
    assert_eq!(next_step(&prepared, at(300)), Step::Wait(at(500)));
    assert_eq!(next_step(&prepared, at(499)), Step::Wait(at(500)));
    assert_eq!(next_step(&prepared, at(500)), Step::Activate("b".into()));
    assert_eq!(next_step(&prepared, at(650)), Step::Activate("b".into()));
    // One an operator prepared early counts too: no second one is asked for.
    assert_eq!(next_step(&prepared, at(10)), Step::Wait(at(500)));
}

#[test]
fn a_successor_without_its_key_here_is_left_to_the_replica_that_has_it() {
    let elsewhere = lifetimes(0, 600, Some(("b", false)));
    assert_eq!(next_step(&elsewhere, at(300)), Step::Wait(at(500)));
    assert_eq!(
        next_step(&elsewhere, at(500)),
        Step::Wait(at(500) + ELSEWHERE_RECHECK)
    );
}

#[test]
fn failure_backoff_doubles_with_jitter_up_to_the_cap() {
    assert_eq!(failure_backoff(1, 0.0), Duration::from_secs(1));
    assert_eq!(failure_backoff(1, 1.0), Duration::from_secs(2));
    assert_eq!(failure_backoff(2, 0.0), Duration::from_secs(2));
    assert_eq!(failure_backoff(3, 0.5), Duration::from_secs(6));
    assert_eq!(failure_backoff(9, 0.0), Duration::from_secs(150));
    assert_eq!(failure_backoff(50, 1.0), Duration::from_secs(300));
    // Out-of-range jitter and a zeroth failure stay within the bounds.
    assert_eq!(failure_backoff(0, 7.0), Duration::from_secs(2));
    assert_eq!(failure_backoff(u32::MAX, -1.0), Duration::from_secs(150));
}

#[test]
fn a_replica_without_the_active_key_leaves_rotation_to_the_one_with_it() {
    for successor in [None, Some(("b", true))] {
        let follower = Lifetimes {
            signs_elsewhere: true,
            ..lifetimes(0, 600, successor)
        };
        for now in [0, 300, 500, 700] {
            assert_eq!(
                next_step(&follower, at(now)),
                Step::Wait(at(now) + ELSEWHERE_RECHECK)
            );
        }
    }
}

//! Waiting for something that happens in another process.

use std::time::{Duration, Instant};

/// Calls `check` every 50 ms until it returns `Some`, and returns that. Panics after `timeout`
/// naming `what`, with the last `Err` `check` gave (why it was not there yet).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: still not so after {timeout:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::wait_until;

    #[test]
    fn returns_the_first_success() {
        let mut calls = 0;
        let got = wait_until("three calls", Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("{calls} calls"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "never: still not so after")]
    fn panics_with_the_last_reason() {
        wait_until::<()>("never", Duration::from_millis(100), || Err("no".into()));
    }
}

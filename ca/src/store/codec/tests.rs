use std::time::{Duration, UNIX_EPOCH};

use super::*;

#[test]
fn unix_seconds_round_trip_and_drop_subseconds() {
    let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
    assert_eq!(to_unix(time, "t").unwrap(), 1_700_000_000);
    assert_eq!(
        from_unix(1_700_000_000).unwrap(),
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
}

#[test]
fn times_before_the_epoch_round_towards_the_past() {
    let time = UNIX_EPOCH - Duration::from_millis(1_500);
    assert_eq!(to_unix(time, "t").unwrap(), -2);
    assert_eq!(from_unix(-2).unwrap(), UNIX_EPOCH - Duration::from_secs(2));
}

#[test]
fn a_time_beyond_i64_seconds_is_refused() {
    let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 2 + 1)) else {
        return; // This platform cannot even represent it.
    };
    assert!(matches!(
        to_unix(far, "not_after"),
        Err(StoreError::InvalidInput {
            field: "not_after",
            ..
        })
    ));
}

#[test]
fn hex_round_trips_and_refuses_bad_digits() {
    let bytes: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
    let text = hex(&bytes);
    assert_eq!(text.len(), 64);
    assert_eq!(parse_hash(&text, "c").unwrap(), bytes);
    assert!(parse_hash(&text.to_uppercase(), "c").is_err());
    assert!(parse_hash(&text[..62], "c").is_err());
    assert!(parse_hash(&format!("{}zz", &text[..62]), "c").is_err());
    assert!(is_lower_hex("00ff"));
    assert!(!is_lower_hex(""));
    assert!(!is_lower_hex("00FF"));
}

#[test]
fn dynamic_sql_numbers_its_placeholders() {
    let mut sql = Sql::new("SELECT 1 WHERE a = ");
    sql.bind(Bind::Int(1))
        .push(" AND b = ")
        .bind(Bind::Text("x".into()));
    assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b = $2");
    assert_eq!(sql.binds.len(), 2);
}

use halyard_proto::api::ca::{Entry, Selector};

use super::*;

fn entry(id: &str, selectors: &[(&str, &str, &str)]) -> Entry {
    Entry {
        spiffe_id: id.into(),
        selectors: selectors
            .iter()
            .map(|(kind, key, value)| Selector {
                kind: (*kind).into(),
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..Entry::default()
    }
}

#[test]
fn a_workload_gets_every_entry_whose_selectors_it_all_has() {
    let entries = [
        entry("spiffe://td/web", &[("unix", "uid", "1000")]),
        entry(
            "spiffe://td/admin",
            &[("unix", "uid", "1000"), ("unix", "gid", "0")],
        ),
        entry("spiffe://td/db", &[("unix", "uid", "1001")]),
        entry("spiffe://td/web", &[("unix", "gid", "100")]),
        entry("spiffe://td/nothing", &[]),
    ];
    let ids = entitled(&entries, &["unix:uid:1000".into(), "unix:gid:100".into()]);
    let ids: Vec<_> = ids.iter().map(SpiffeId::as_str).collect();
    assert_eq!(ids, ["spiffe://td/web"]);
    assert!(entitled(&entries, &["unix:uid:7".into()]).is_empty());
}

#[tokio::test]
async fn the_calling_process_is_described_by_uid_gid_and_path() {
    let me = Workload {
        pid: Some(std::process::id() as i32),
        uid: 4242,
        gid: 4343,
    };
    let selectors = UnixAttestor::default().selectors(&me).await.unwrap();
    assert_eq!(selectors[0], "unix:uid:4242");
    assert_eq!(selectors[1], "unix:gid:4343");
    let exe = std::env::current_exe().unwrap();
    assert!(
        selectors.contains(&format!("unix:path:{}", exe.display())),
        "{selectors:?}"
    );
}

#[tokio::test]
async fn a_vanished_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Workload {
        pid: Some(99),
        uid: 1,
        gid: 1,
    };
    let err = UnixAttestor::with_proc_root(dir.path())
        .selectors(&gone)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::ProcessChanged { pid: 99, .. }),
        "{err}"
    );
    // Without a pid only the credentials count.
    let no_pid = Workload {
        pid: None,
        uid: 1,
        gid: 2,
    };
    assert_eq!(
        UnixAttestor::default().selectors(&no_pid).await.unwrap(),
        ["unix:uid:1", "unix:gid:2"]
    );
}

#[test]
fn the_start_time_is_read_past_a_command_name_with_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let proc_dir = dir.path().join("7");
    std::fs::create_dir(&proc_dir).unwrap();
    std::fs::write(
        proc_dir.join("stat"),
        "7 (my prog) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 0 0\n",
    )
    .unwrap();
    assert_eq!(super::unix::start_time(&proc_dir), Ok(12345));
    std::fs::write(proc_dir.join("stat"), "7 (broken\n").unwrap();
    assert!(super::unix::start_time(&proc_dir).is_err());
}

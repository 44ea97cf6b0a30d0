use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_0600_and_public_files_0644() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    let crt = dir.path().join("a.crt");
    write_secret(&key, b"secret", Overwrite::Refuse).unwrap();
    write_public(&crt, b"public", Overwrite::Refuse).unwrap();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&crt), 0o644);
    assert_eq!(read_secret(&key).unwrap().as_slice(), b"secret");
    assert_eq!(read_public(&crt).unwrap(), b"public");
}

#[test]
fn refuses_to_overwrite_when_told_and_keeps_the_old_contents() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    write_secret(&key, b"first", Overwrite::Refuse).unwrap();
    let err = write_secret(&key, b"second", Overwrite::Refuse).unwrap_err();
    assert!(matches!(err, FileError::Exists(_)), "{err}");
    assert_eq!(read_secret(&key).unwrap().as_slice(), b"first");
    write_secret(&key, b"third", Overwrite::Allow).unwrap();
    assert_eq!(read_secret(&key).unwrap().as_slice(), b"third");
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn refuses_a_secret_that_group_or_other_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    write_secret(&key, b"secret", Overwrite::Refuse).unwrap();
    for bad in [0o644, 0o640, 0o604, 0o610] {
        fs::set_permissions(&key, fs::Permissions::from_mode(bad)).unwrap();
        let err = read_secret(&key).unwrap_err();
        assert!(
            matches!(err, FileError::InsecurePermissions { mode, .. } if mode == bad),
            "{bad:o}: {err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(read_secret(&key).is_ok());
}

#[test]
fn missing_files_and_directories_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    let err = read_secret(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.key"), "{err}");
    let err = write_public(
        &dir.path().join("no/such/dir/x.crt"),
        b"x",
        Overwrite::Allow,
    )
    .unwrap_err();
    assert!(matches!(err, FileError::Write { .. }), "{err}");
}

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use tonic::Code;

use super::*;

#[test]
fn only_the_own_uid_is_admitted() {
    let me = Peer {
        uid: 1000,
        pid: Some(7),
    };
    assert!(admit(1000, Some(me)).is_ok());
    let other = admit(1000, Some(Peer { uid: 65534, ..me })).unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert_eq!(
        other.message(),
        "the admin socket serves only the user the CA runs as (uid 1000); \
         this connection is from uid 65534"
    );
    // Root is another user too, when the CA is not root.
    assert!(admit(1000, Some(Peer { uid: 0, ..me })).is_err());
    let unknown = admit(0, None).unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert!(unknown.message().contains("credentials are unknown"));
}

#[test]
fn a_request_without_connection_info_is_refused() {
    let owner = OwnerOnly::new(0);
    let err = owner.check(Request::new(())).unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn own_uid_is_this_process_s() {
    let proc_self = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert_eq!(own_uid().await.unwrap(), proc_self);
}

#[tokio::test]
async fn the_socket_is_0600_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = bind(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let connect = tokio::net::UnixStream::connect(&path);
    let (accepted, connected) = tokio::join!(listener.accept(), connect);
    let (stream, _) = accepted.unwrap();
    connected.unwrap();
    assert_eq!(
        stream.peer_cred().unwrap().uid(),
        own_uid().await.unwrap(),
        "the credentials the check reads"
    );
    // Nothing of the staging directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["admin.sock"]);
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let live = bind(&path).unwrap();
    let err = bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(
        err.to_string(),
        "another halyard-ca is serving this admin socket"
    );
    drop(live);
    // The file stays behind, as after a crash: it is replaced.
    assert!(path.exists());
    let _again = bind(&path).unwrap();
}

#[tokio::test]
async fn anything_but_a_socket_at_the_path_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("halyard.db");
    std::fs::write(&file, b"precious").unwrap();
    let err = bind(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "exists and is not a socket; refusing to replace it"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    assert!(bind(&sub).is_err());
    assert!(sub.is_dir());

    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert!(bind(&link).is_err(), "a symlink is not replaced either");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[tokio::test]
async fn a_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/admin.sock");
    let err = bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().starts_with("its directory: "), "{err}");
}

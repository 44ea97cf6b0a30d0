//! The admin socket serves only the user the CA runs as, twice over: the socket file is 0600, and
//! should that be loosened, the peer's credentials are checked on every request. Acting as another
//! user takes root (`runuser -u nobody`); the README test command runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use halyard_ca::testing::TestServer;

const CA: &str = env!("CARGO_BIN_EXE_halyard-ca");

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `halyard-ca ARGS` as the user `nobody` (uid 65534).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", CA])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
#[ignore = "needs root: run via the README test command"]
async fn another_user_is_refused_by_the_file_mode_and_then_by_the_uid_check() {
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        me, 0,
        "this test must run as root, to act as another user; run it via the README test command"
    );
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    assert!(nobody.status.success(), "no user nobody: {}", text(&nobody));
    let nobody_uid = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();

    let server = TestServer::start_logging(Path::new(CA), &[], Some("info"));
    let socket = server.data_dir().join("admin.sock");
    let socket_arg = socket.display().to_string();
    let socket_arg = socket_arg.as_str();
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "owner only");
    assert_eq!(meta.uid(), me, "owned by the user the CA runs as");

    // Let nobody reach the socket's directory (traverse only), so that only the socket's own
    // mode stands in the way.
    for dir in [server.dir.path().to_owned(), server.data_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let token = [
        "token",
        "create",
        "--admin-socket",
        socket_arg,
        "--node",
        "intruder",
    ];
    let out = as_nobody(&token);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the CA's admin socket {socket_arg}"))
            && stderr.contains("Permission denied"),
        "the kernel refuses the connect on the file mode: {}",
        text(&out)
    );

    // With the file mode loosened, the server itself refuses: every command, read-only ones too.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refusal = format!(
        "PermissionDenied: the admin socket serves only the user the CA runs as (uid {me}); \
         this connection is from uid {nobody_uid}"
    );
    for args in [
        &token[..],
        &["authority", "list", "--admin-socket", socket_arg],
        &["node", "list", "--admin-socket", socket_arg],
    ] {
        let out = as_nobody(args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&refusal),
            "{args:?}: {}",
            text(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
    }

    // The owner still gets through the same, loosened socket: it was the uid that was refused.
    let own = Command::new(CA).args(token).output().unwrap();
    assert!(own.status.success(), "{}", text(&own));
    let issued = String::from_utf8_lossy(&own.stdout).trim().to_owned();
    assert!(!issued.is_empty());

    // Logged once at warn (later refusals of the same uid at debug), naming the uid; no token.
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("refused another user"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains(&nobody_uid),
        "{}",
        warnings[0]
    );
    assert!(!log.contains(&issued), "the token is not logged");
}

/// `halyard-ca serve --dev` in `dir` with its admin socket at `socket`, to completion.
fn serve_with_admin_socket(dir: &Path, socket: &Path) -> Output {
    Command::new(CA)
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--admin-socket")
        .arg(socket)
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap()
}

#[test]
fn serve_refuses_an_admin_socket_path_that_is_not_a_socket_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("halyard.db");
    std::fs::write(&precious, b"not a socket").unwrap();
    let out = serve_with_admin_socket(dir.path(), &precious);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "admin socket {}: exists and is not a socket; refusing to replace it",
            precious.display()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"not a socket");

    let missing = dir.path().join("no-such-dir/admin.sock");
    let out = serve_with_admin_socket(dir.path(), &missing);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "admin socket {}: its directory: No such file or directory",
            missing.display()
        )),
        "{}",
        text(&out)
    );
}

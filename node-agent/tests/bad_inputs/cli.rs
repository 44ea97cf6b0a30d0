//! The command line, the config file and the data directory of `halyard-agent run`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::{TestServer, ca_binary, free_port};

use super::*;

/// What the command-line rows share: a running CA with its bundle, a running agent (whose
/// socket is in use, and whose node SVID other rows copy), a node SVID of another trust
/// domain, and a scratch directory.
struct Cli {
    ca: TestServer,
    running: TestAgent,
    foreign: PathBuf,
    scratch: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let ca = ca_with_entry();
        let running = join(&ca, "node-a", &[]);
        let scratch = tempfile::tempdir().unwrap();
        // A node SVID from a CA of another trust domain.
        let foreign = scratch.path().join("foreign");
        {
            let other = TestServer::start(&ca_binary(), &["--trust-domain", "other.org"]);
            let agent = join(&other, "node-x", &[]);
            copy_dir(&agent.data_dir(), &foreign);
        }
        Cli {
            ca,
            running,
            foreign,
            scratch,
        }
    }

    fn path(&self, name: &str) -> String {
        self.scratch.path().join(name).display().to_string()
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn address(&self) -> String {
        format!("https://{}", self.ca.grpc)
    }

    fn bundle(&self) -> String {
        self.ca.data_dir().join("bundle.pem").display().to_string()
    }

    fn token(&self) -> String {
        self.ca
            .cli(&["token", "create", "--node", "node-d"])
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A data directory `name` holding a copy of the running agent's node SVID, then changed
    /// by `edit`.
    fn data_dir(&self, name: &str, edit: impl FnOnce(&Path)) -> String {
        let dir = self.scratch.path().join(name);
        copy_dir(&self.running.data_dir(), &dir);
        edit(&dir);
        dir.display().to_string()
    }

    /// `run` against the CA with `flags`: the usual ones first (a later flag would repeat them),
    /// then a socket and data directory of the scratch directory unless given.
    fn run(&self, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        let given = |f: &str| flags.contains(&f);
        if !given("--ca-address") {
            args.extend(["--ca-address".into(), self.address()]);
        }
        if !given("--trust-bundle") {
            args.extend(["--trust-bundle".into(), self.bundle()]);
        }
        if !given("--socket") {
            args.extend(["--socket".into(), self.path("agent.sock")]);
        }
        if !given("--data-dir") {
            args.extend(["--data-dir".into(), self.path("fresh-data")]);
        }
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        args
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        std::fs::copy(&path, &target).unwrap();
    }
}

/// A command-line row: its name, its arguments, the exit code and what stderr must contain.
type CliRow = (&'static str, Vec<String>, i32, String);

fn cli_rows(f: &Cli) -> Vec<CliRow> {
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let usage = 2;
    let error = 1;
    let missing = f.path("missing");
    let config = |name: &str, text: &str| f.write(name, text, 0o644);
    let pem_garbage = f.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        0o644,
    );
    let other_bundle = f.foreign.join("bundle.pem").display().to_string();
    let text_file = f.write("notes.txt", "these are not certificates\n", 0o644);
    let empty = f.write("empty-token", "", 0o644);
    let binary = f.write("binary-token", [0xff, 0xfe, 0x00, 0x80], 0o600);
    let token_file = f.write("token", "a.b.c", 0o600);
    let dead_port = free_port();
    let key_0644 = f.data_dir("data-key-0644", |d| {
        std::fs::set_permissions(d.join("node.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap()
    });
    let key_0640 = f.data_dir("data-key-0640", |d| {
        std::fs::set_permissions(d.join("node.key"), std::fs::Permissions::from_mode(0o640))
            .unwrap()
    });
    let crt_garbage = f.data_dir("data-crt-garbage", |d| {
        std::fs::write(d.join("node.crt"), "garbage\n").unwrap()
    });
    let crt_bad_pem = f.data_dir("data-crt-bad-pem", |d| {
        std::fs::write(
            d.join("node.crt"),
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap()
    });
    let crt_not_x509 = f.data_dir("data-crt-not-x509", |d| {
        std::fs::write(
            d.join("node.crt"),
            pem::encode(&pem::Pem::new("CERTIFICATE", b"not DER".to_vec())),
        )
        .unwrap()
    });
    let crt_truncated = f.data_dir("data-crt-truncated", |d| {
        // Cut inside the second block, as a crash mid-write would.
        let pem = std::fs::read_to_string(d.join("node.crt")).unwrap();
        let second = pem.rfind("-----BEGIN").unwrap();
        assert!(second > 0, "node.crt holds one certificate: {pem}");
        std::fs::write(d.join("node.crt"), &pem[..second + 100]).unwrap()
    });
    let crt_leaf_only = f.data_dir("data-crt-leaf-only", |d| {
        let pem = std::fs::read_to_string(d.join("node.crt")).unwrap();
        std::fs::write(d.join("node.crt"), &pem[..pem.rfind("-----BEGIN").unwrap()]).unwrap()
    });
    let key_garbage = f.data_dir("data-key-garbage", |d| {
        std::fs::write(
            d.join("node.key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap()
    });
    let key_other = f.data_dir("data-key-other", |d| {
        std::fs::copy(f.foreign.join("node.key"), d.join("node.key")).unwrap();
    });
    let crt_missing = f.data_dir("data-crt-missing", |d| {
        std::fs::remove_file(d.join("node.crt")).unwrap()
    });
    let foreign_td = f.data_dir("data-other-trust-domain", |d| {
        for file in ["node.key", "node.crt"] {
            std::fs::copy(f.foreign.join(file), d.join(file)).unwrap();
        }
    });
    let bundle_garbage = f.data_dir("data-bundle-garbage", |d| {
        std::fs::write(d.join("bundle.pem"), "garbage\n").unwrap()
    });
    let bundle_binary = f.data_dir("data-bundle-binary", |d| {
        std::fs::write(d.join("bundle.pem"), [0xff, 0xfe, 0x00, 0x80]).unwrap()
    });
    let bundle_truncated = f.data_dir("data-bundle-truncated", |d| {
        // A crash mid-write, had the agent not written through a temporary file.
        let pem = std::fs::read_to_string(f.ca.data_dir().join("bundle.pem")).unwrap();
        std::fs::write(d.join("bundle.pem"), &pem[..pem.len() / 2]).unwrap()
    });
    let bundle_not_x509 = f.data_dir("data-bundle-not-x509", |d| {
        std::fs::write(
            d.join("bundle.pem"),
            pem::encode(&pem::Pem::new("CERTIFICATE", b"not DER".to_vec())),
        )
        .unwrap()
    });
    let stored_bundle = |dir: &str, why: &str| {
        format!(
            "halyard-agent: error: {dir}/bundle.pem: {why} (it holds the roots the CA last pushed; remove it to trust --trust-bundle again)"
        )
    };
    let file_as_dir = f.write("plain-file", "", 0o644);
    let long_socket = format!("{}/{}.sock", f.path("s"), "s".repeat(120));
    let in_use = f.running.socket().display().to_string();
    let fresh = f.path("fresh-data");
    let key_msg = |dir: &str, mode: &str| {
        format!(
            "{dir}/node.key holds a private key but its mode is {mode}: group and other must have no access (run: chmod 600 {dir}/node.key)"
        )
    };
    let no_svid = |dir: &str, why: String| {
        format!(
            "halyard-agent: error: {dir} holds no usable node SVID ({why}) and neither --join-token (create one with `halyard-ca token create --node NAME`) nor --node-token-file was given"
        )
    };
    vec![
        // --- flags ---
        (
            "an unknown flag",
            s(&["run", "--bogus"]),
            usage,
            "error: unexpected argument '--bogus' found".into(),
        ),
        (
            "an unknown subcommand",
            s(&["serve"]),
            usage,
            "error: unrecognized subcommand 'serve'".into(),
        ),
        (
            "a flag without its value",
            s(&["run", "--socket"]),
            usage,
            "error: a value is required for '--socket <SOCKET>' but none was supplied".into(),
        ),
        (
            "no --ca-address",
            s(&["run", "--trust-bundle", &f.bundle()]),
            error,
            "halyard-agent: error: --ca-address is required (e.g. https://127.0.0.1:8443)".into(),
        ),
        (
            "no --trust-bundle",
            s(&["run", "--ca-address", &f.address()]),
            error,
            "halyard-agent: error: --trust-bundle is required (the CA's bundle.pem)".into(),
        ),
        (
            "a missing trust bundle",
            f.run(&["--trust-bundle", &missing]),
            error,
            format!(
                "halyard-agent: error: --trust-bundle {missing}: No such file or directory (os error 2)"
            ),
        ),
        (
            "a trust bundle that is a directory",
            f.run(&["--trust-bundle", &f.path("")]),
            error,
            format!(
                "halyard-agent: error: --trust-bundle {}: Is a directory (os error 21)",
                f.path("")
            ),
        ),
        (
            "a trust bundle without certificates",
            f.run(&["--trust-bundle", &text_file]),
            error,
            format!("halyard-agent: error: --trust-bundle {text_file}: no PEM certificate in it"),
        ),
        (
            "a trust bundle whose certificate is garbage",
            f.run(&["--trust-bundle", &pem_garbage, "--join-token", "t"]),
            error,
            format!(
                "halyard-agent: error: --trust-bundle {pem_garbage}: certificate 1 is not a DER X.509 certificate: "
            ),
        ),
        (
            "a trust bundle of another CA",
            f.run(&["--trust-bundle", &other_bundle, "--join-token", "t"]),
            error,
            format!(
                "halyard-agent: error: cannot reach the CA at {}: ",
                f.address()
            ),
        ),
        (
            "a CA address that is no URL",
            f.run(&["--ca-address", "not a url", "--join-token", "t"]),
            error,
            "halyard-agent: error: --ca-address \"not a url\": ".into(),
        ),
        (
            "a CA address over plain HTTP",
            f.run(&[
                "--ca-address",
                &format!("http://{}", f.ca.grpc),
                "--join-token",
                "t",
            ]),
            error,
            format!(
                "halyard-agent: error: --ca-address \"http://{}\": the CA is reached over TLS: give an https:// address",
                f.ca.grpc
            ),
        ),
        (
            "a CA address where nothing listens",
            f.run(&[
                "--ca-address",
                &format!("https://127.0.0.1:{dead_port}"),
                "--join-token",
                "t",
            ]),
            error,
            format!("halyard-agent: error: cannot reach the CA at https://127.0.0.1:{dead_port}: "),
        ),
        (
            "a join token the CA never issued",
            f.run(&["--join-token", "not-a-token"]),
            error,
            "halyard-agent: error: the CA refused: ".into(),
        ),
        (
            "a bad --ttl",
            f.run(&["--ttl", "forever"]),
            error,
            "halyard-agent: error: --ttl: ".into(),
        ),
        (
            "a bad --taint-spread",
            f.run(&["--taint-spread", "a while"]),
            error,
            "halyard-agent: error: --taint-spread: ".into(),
        ),
        (
            "no node credential and no stored node SVID",
            f.run(&[]),
            error,
            no_svid(&fresh, "no node.key and node.crt yet".into()),
        ),
        (
            "a join token and a token file",
            f.run(&["--join-token", "t", "--node-token-file", &token_file]),
            error,
            format!(
                "halyard-agent: error: --join-token and --node-token-file {token_file} both attest the node: give one"
            ),
        ),
        (
            "a missing node token file",
            f.run(&["--node-token-file", &missing]),
            error,
            format!(
                "halyard-agent: error: --node-token-file {missing}: No such file or directory (os error 2)"
            ),
        ),
        (
            "an empty node token file",
            f.run(&["--node-token-file", &empty]),
            error,
            format!("halyard-agent: error: --node-token-file {empty}: the file is empty"),
        ),
        (
            "a node token file that is not text",
            f.run(&["--node-token-file", &binary]),
            error,
            format!(
                "halyard-agent: error: --node-token-file {binary}: the token is not UTF-8 text"
            ),
        ),
        (
            "a node token file that is a directory",
            f.run(&["--node-token-file", &f.path("")]),
            error,
            format!(
                "halyard-agent: error: --node-token-file {}: Is a directory (os error 21)",
                f.path("")
            ),
        ),
        (
            "a socket under a regular file",
            f.run(&[
                "--join-token",
                &f.token(),
                "--socket",
                &format!("{file_as_dir}/agent.sock"),
                "--data-dir",
                &f.path("data-file-socket"),
            ]),
            error,
            format!(
                "halyard-agent: error: --socket {file_as_dir}/agent.sock: Not a directory (os error 20)"
            ),
        ),
        (
            "a socket path too long for a unix socket",
            f.run(&[
                "--join-token",
                &f.token(),
                "--socket",
                &long_socket,
                "--data-dir",
                &f.path("data-long-socket"),
            ]),
            error,
            format!(
                "halyard-agent: error: --socket {long_socket}: path must be shorter than SUN_LEN"
            ),
        ),
        (
            "a socket another agent serves on",
            f.run(&[
                "--join-token",
                &f.token(),
                "--socket",
                &in_use,
                "--data-dir",
                &f.path("data-in-use"),
            ]),
            error,
            format!("halyard-agent: error: --socket {in_use}: {in_use} is in use by another agent"),
        ),
        // --- the config file ---
        (
            "a missing config file",
            s(&["run", "--config", &missing]),
            error,
            format!(
                "halyard-agent: error: cannot read config file {missing}: No such file or directory (os error 2)"
            ),
        ),
        (
            "a config file with an unknown key",
            s(&[
                "run",
                "--config",
                &config(
                    "unknown.toml",
                    "ca_address = \"https://x\"\ntrust_bundel = \"/b.pem\"\n",
                ),
            ]),
            error,
            format!(
                "halyard-agent: error: config file {}: TOML parse error at line 2, column 1   | 2 | trust_bundel = \"/b.pem\"   | ^^^^^^^^^^^^ unknown field `trust_bundel`, expected one of `ca_address`, `trust_bundle`,",
                f.path("unknown.toml")
            ),
        ),
        (
            "a config file with a value of the wrong type",
            s(&[
                "run",
                "--config",
                &config("type.toml", "ca_address = 8443\n"),
            ]),
            error,
            format!(
                "halyard-agent: error: config file {}: TOML parse error at line 1, column 14   | 1 | ca_address = 8443   |              ^^^^ invalid type: integer `8443`, expected a string",
                f.path("type.toml")
            ),
        ),
        (
            "a config file with a flag of the wrong type",
            s(&[
                "run",
                "--config",
                &config("bool.toml", "kubernetes = \"yes\"\n"),
            ]),
            error,
            format!(
                "halyard-agent: error: config file {}: TOML parse error at line 1, column 14   | 1 | kubernetes = \"yes\"   |              ^^^^^ invalid type: string \"yes\", expected a boolean",
                f.path("bool.toml")
            ),
        ),
        (
            "a config file that is not TOML",
            s(&["run", "--config", &config("broken.toml", "ca_address = \n")]),
            error,
            format!(
                "halyard-agent: error: config file {}: TOML parse error at line 1, column 14   | 1 | ca_address =    |              ^ invalid string expected `\"`, `'`",
                f.path("broken.toml")
            ),
        ),
        (
            "a config file naming another config file",
            s(&[
                "run",
                "--config",
                &config("nested.toml", "config = \"/etc/other.toml\"\n"),
            ]),
            error,
            format!(
                "halyard-agent: error: config file {}: TOML parse error at line 1, column 1   | 1 | config = \"/etc/other.toml\"   | ^^^^^^ unknown field `config`, expected one of",
                f.path("nested.toml")
            ),
        ),
        (
            "a config file with a bad ttl",
            s(&[
                "run",
                "--config",
                &config(
                    "ttl.toml",
                    &format!(
                        "ca_address = \"{}\"\ntrust_bundle = \"{}\"\nttl = \"1 fortnight\"\n",
                        f.address(),
                        f.bundle()
                    ),
                ),
            ]),
            error,
            format!(
                "halyard-agent: error: config file {}: ttl: ",
                f.path("ttl.toml")
            ),
        ),
        // --- the data directory ---
        (
            "a node key readable by group and other",
            f.run(&["--data-dir", &key_0644, "--join-token", &f.token()]),
            error,
            format!("halyard-agent: error: {}", key_msg(&key_0644, "0644")),
        ),
        (
            "a node key readable by group",
            f.run(&["--data-dir", &key_0640]),
            error,
            format!("halyard-agent: error: {}", key_msg(&key_0640, "0640")),
        ),
        (
            "a node certificate that is not PEM",
            f.run(&["--data-dir", &crt_garbage]),
            error,
            no_svid(
                &crt_garbage,
                format!("{crt_garbage}/node.crt holds no node SVID: empty chain"),
            ),
        ),
        (
            "a node certificate of broken PEM",
            f.run(&["--data-dir", &crt_bad_pem]),
            error,
            no_svid(
                &crt_bad_pem,
                format!(
                    "{crt_bad_pem}/node.crt is not PEM: invalid data: Invalid symbol 33, offset 0."
                ),
            ),
        ),
        (
            "a node certificate that is not X.509",
            f.run(&["--data-dir", &crt_not_x509]),
            error,
            no_svid(
                &crt_not_x509,
                format!(
                    "{crt_not_x509}/node.crt holds no node SVID: not a DER X.509 certificate: Parsing Error: NomError(Eof)"
                ),
            ),
        ),
        (
            "a truncated node certificate",
            f.run(&["--data-dir", &crt_truncated]),
            error,
            no_svid(
                &crt_truncated,
                format!("{crt_truncated}/node.crt is cut short: 2 PEM blocks begin, only 1 ends"),
            ),
        ),
        (
            "a node certificate without its intermediate",
            f.run(&["--data-dir", &crt_leaf_only]),
            error,
            no_svid(
                &crt_leaf_only,
                format!(
                    "{crt_leaf_only}/node.crt: the chain of the node SVID spiffe://cluster.local/halyard/node/node-a (1 certificate) leads to no root of the trust bundle"
                ),
            ),
        ),
        (
            "a node key that is no key",
            f.run(&["--data-dir", &key_garbage]),
            error,
            no_svid(
                &key_garbage,
                format!("{key_garbage}/node.key is not a PEM private key"),
            ),
        ),
        (
            "a node key of another certificate",
            f.run(&["--data-dir", &key_other]),
            error,
            no_svid(
                &key_other,
                format!(
                    "{key_other}/node.key does not hold the key of the certificate in {key_other}/node.crt"
                ),
            ),
        ),
        (
            "a node key without its certificate",
            f.run(&["--data-dir", &crt_missing]),
            error,
            no_svid(&crt_missing, format!("{crt_missing}/node.crt is missing")),
        ),
        (
            "a stored trust bundle that is not PEM",
            f.run(&["--data-dir", &bundle_garbage]),
            error,
            stored_bundle(&bundle_garbage, "no PEM certificate in it"),
        ),
        (
            "a stored trust bundle that is not text",
            f.run(&["--data-dir", &bundle_binary]),
            error,
            stored_bundle(&bundle_binary, "not UTF-8 text"),
        ),
        (
            "a truncated stored trust bundle",
            f.run(&["--data-dir", &bundle_truncated]),
            error,
            stored_bundle(&bundle_truncated, "a PEM block is cut short"),
        ),
        (
            "a stored trust bundle whose certificate is not X.509",
            f.run(&["--data-dir", &bundle_not_x509]),
            error,
            stored_bundle(
                &bundle_not_x509,
                "certificate 1 is not a DER X.509 certificate: Parsing Error: NomError(Eof)",
            ),
        ),
        (
            "a node SVID of another trust domain",
            f.run(&["--data-dir", &foreign_td]),
            error,
            no_svid(
                &foreign_td,
                format!(
                    "{foreign_td}/node.crt: the chain of the node SVID spiffe://other.org/halyard/node/node-x (2 certificates) leads to no root of the trust bundle"
                ),
            ),
        ),
    ]
}

/// Runs the agent with `args`; returns (exit code, stderr). Fails if it does not exit.
fn run_agent(row: &str, args: &[String]) -> (i32, String) {
    let mut child = Command::new(agent_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{row}: halyard-agent {args:?} did not exit within {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_refuses_bad_flags_and_files_precisely_and_damages_nothing() {
    let f = Cli::new();
    let rows = cli_rows(&f);
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let running_before = files(&f.running.data_dir());
    let mut failures = Vec::new();
    for (name, args, code, expected) in rows {
        let before = files(f.scratch.path());
        let (exit, stderr) = run_agent(name, &args);
        if !stderr.contains(&expected) {
            failures.push(format!(
                "{name}:\n  expected: {expected}\n  got:      {stderr}"
            ));
        } else if exit != code {
            failures.push(format!("{name}: exit {exit}, not {code}: {stderr}"));
        }
        // No secret in the message, and every file as it was (the node SVIDs a row fetched with
        // a fresh token into its own data directory aside).
        assert!(!stderr.contains("PRIVATE KEY"), "{name}: {stderr}");
        let after: Vec<_> = files(f.scratch.path())
            .into_iter()
            .filter(|(p, _, _)| before.iter().any(|(b, _, _)| b == p))
            .collect();
        assert_eq!(after, before, "{name}: a refusal changed a file");
        assert_no_temporary_files(f.scratch.path(), name);
    }
    assert_no_failures(&failures);
    // The agent whose socket a row tried to take still serves on it.
    let (ok, output) = f.running.fetch_as(0);
    assert!(
        ok && output.contains(ROOT_ID),
        "{output}\n{}",
        f.running.log()
    );
    assert_eq!(files(&f.running.data_dir()), running_before);
}

//! OpenSSL as an independent verifier.

use std::path::Path;
use std::process::Command;

/// Whether an `openssl` binary runs here.
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `openssl verify -x509_strict -purpose PURPOSE -CAfile ROOT -untrusted INTERMEDIATES LEAF`
/// on PEM files and returns its combined output on failure.
pub fn openssl_verify(
    purpose: &str,
    root: &Path,
    intermediates: &Path,
    leaf: &Path,
) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(intermediates)
        .arg(leaf)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && text.trim_end().ends_with(": OK") {
        Ok(())
    } else {
        Err(text)
    }
}

//! Key and certificate files.
//!
//! Secrets are written 0600 through a temporary file in the same directory, synced and renamed
//! over the target, so a crash leaves either the old file or the new one, never half of one.
//! Reading a secret refuses a file that group or other may read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// What went wrong with which file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret file that group or other may read.
    #[error(
        "{path} holds a private key but its mode is {mode:04o}: group and other must have no access (run: chmod 600 {path})"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that must not be overwritten exists.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

/// Whether an existing file may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Allow,
    /// Fail with [`FileError::Exists`].
    Refuse,
}

/// Writes a secret: mode 0600, atomically.
pub fn write_secret(path: &Path, contents: &[u8], overwrite: Overwrite) -> Result<(), FileError> {
    write_atomic(path, contents, 0o600, overwrite)
}

/// Writes a public file (certificates, CSRs, bundles): mode 0644, atomically.
pub fn write_public(path: &Path, contents: &[u8], overwrite: Overwrite) -> Result<(), FileError> {
    write_atomic(path, contents, 0o644, overwrite)
}

/// Reads a secret, refusing it when group or other have any access to it.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map(Zeroizing::new).map_err(read_err)
}

/// Reads a public file.
pub fn read_public(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), FileError> {
    let write_err = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    if overwrite == Overwrite::Refuse && path.exists() {
        return Err(FileError::Exists(path.to_owned()));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // tempfile creates the file 0600 with O_EXCL, so a secret is never readable by others,
    // not even before the rename.
    let mut tmp = tempfile::Builder::new()
        .prefix(".halyard-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(contents).map_err(write_err)?;
    if mode != 0o600 {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err)?;
    }
    tmp.as_file().sync_all().map_err(write_err)?;
    match overwrite {
        Overwrite::Allow => tmp
            .persist(path)
            .map(drop)
            .map_err(|e| write_err(e.error))?,
        Overwrite::Refuse => match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(FileError::Exists(path.to_owned()));
            }
            Err(e) => return Err(write_err(e.error)),
        },
    }
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)
}

#[cfg(test)]
mod tests;

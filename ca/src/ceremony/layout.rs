//! Where the ceremony's files live.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::files::FileError;

/// An offline root's directory: `root.crt` and `root.key`.
#[derive(Clone, Debug)]
pub struct RootDir(PathBuf);

impl RootDir {
    /// The root directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> RootDir {
        RootDir(path.into())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The root certificate, PEM.
    pub fn cert(&self) -> PathBuf {
        self.0.join("root.crt")
    }

    /// The root key, PKCS#8 PEM, 0600.
    pub fn key(&self) -> PathBuf {
        self.0.join("root.key")
    }

    pub(crate) fn create(&self) -> Result<(), FileError> {
        create_private_dir(&self.0)
    }
}

/// A CA data directory.
#[derive(Clone, Debug)]
pub struct DataDir(PathBuf);

impl DataDir {
    /// The data directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DataDir {
        DataDir(path.into())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The intermediate's key, PKCS#8 PEM, 0600.
    pub fn intermediate_key(&self) -> PathBuf {
        self.0.join("intermediate.key")
    }

    /// The intermediate followed by any upstream intermediates, PEM.
    pub fn intermediate_cert(&self) -> PathBuf {
        self.0.join("intermediate.crt")
    }

    /// The trust bundle: every trusted root, PEM.
    pub fn bundle(&self) -> PathBuf {
        self.0.join("bundle.pem")
    }

    pub(crate) fn create(&self) -> Result<(), FileError> {
        create_private_dir(&self.0)
    }
}

/// Creates a directory (and its parents) that only its owner can enter, if it does not exist.
fn create_private_dir(path: &Path) -> Result<(), FileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| FileError::Write {
            path: path.to_owned(),
            source,
        })
}

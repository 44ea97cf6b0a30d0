//! What can go wrong in the store.

use std::sync::Arc;

/// An error from the [`Store`](super::Store).
///
/// `Clone`, because one failed journal transaction is reported to every caller whose row it held.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL's scheme is neither `sqlite` nor `postgres`.
    #[error("unsupported store URL scheme {scheme:?}: expected sqlite:///PATH or postgres://…")]
    UnsupportedUrl {
        /// The scheme found (the rest of the URL is not repeated: it may hold a password).
        scheme: String,
    },
    /// A [`StoreOptions`](super::StoreOptions) value out of range.
    #[error("invalid store options: {0}")]
    InvalidOptions(String),
    /// An argument the store refuses to write, named with the reason.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument or field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database failed (connection, SQL, constraint, I/O).
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// Bringing the schema up to date failed.
    #[error("schema migration failed: {0}")]
    Migrate(Arc<sqlx::migrate::MigrateError>),
    /// A stored value cannot be decoded, or a row the schema guarantees is missing.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The background journal writer has stopped, so nothing more can be recorded.
    #[error("the journal writer has stopped")]
    WriterStopped,
    /// No join token has this hash.
    #[error("unknown join token")]
    TokenUnknown,
    /// The join token was already used.
    #[error("join token already used")]
    TokenUsed,
    /// The join token expired before it was used.
    #[error("join token expired")]
    TokenExpired,
    /// A join token with this hash already exists.
    #[error("a join token with this hash already exists")]
    TokenExists,
    /// An entry with the same SPIFFE ID, node and selectors already exists.
    #[error("an identical registration entry already exists: {id}")]
    EntryExists {
        /// The existing entry's id (empty if it was deleted in the meantime).
        id: String,
    },
    /// No journaled certificate has this serial.
    #[error("no certificate with serial {serial} was issued by this CA")]
    NotIssued {
        /// The serial asked for.
        serial: String,
    },
    /// The certificate has expired: revoking it would change nothing.
    #[error("certificate {serial} already expired at {not_after}; nothing to revoke")]
    AlreadyExpired {
        /// Its serial.
        serial: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// The certificate is already revoked.
    #[error("certificate {serial} was already revoked at {revoked_at} ({reason})")]
    AlreadyRevoked {
        /// Its serial.
        serial: String,
        /// When, RFC 3339.
        revoked_at: String,
        /// Why it was revoked.
        reason: String,
    },
    /// No authority has this id.
    #[error("no authority with id {id}: see `halyard-ca authority list`")]
    AuthorityUnknown {
        /// The id asked for.
        id: String,
    },
    /// An authority with this id is already recorded.
    #[error("authority {id} is already known ({state})")]
    AuthorityExists {
        /// Its id.
        id: String,
        /// Its state.
        state: super::AuthorityState,
    },
    /// The authority is not in a state that allows the change.
    #[error("authority {id}: {reason}")]
    AuthorityState {
        /// Its id.
        id: String,
        /// Why the change is refused.
        reason: String,
    },
    /// Tainting the active authority needs a prepared one to take over.
    #[error(
        "authority {id} is active and no unexpired prepared authority can take over: run \
         `halyard-ca authority prepare` first"
    )]
    NoSuccessor {
        /// The active authority's id.
        id: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl StoreError {
    pub(super) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(Arc::new(error))
    }
}

/// Whether a database error is a unique-constraint violation (on either engine).
pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

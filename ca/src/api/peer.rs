//! Who is calling: the SPIFFE ID in the client certificate rustls verified against the bundle.
//!
//! rustls checks the certificate's dates once, at the handshake; a connection can outlive the
//! certificate, so every request checks them again.
//!
//! What a client certificate says is a function of its DER alone, and a connection presents the
//! same certificate on every request, so each certificate is parsed and checked against the
//! X509-SVID rules once and remembered ([`KNOWN`]); only the dates are checked per request.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::SystemTime;

use halyard_proto::{SpiffeId, validate_leaf};
use secrecy::SecretString;
use tonic::{Request, Status};

use crate::authority::rfc3339;

/// An authenticated caller.
pub(super) struct Peer {
    /// Its SPIFFE ID.
    pub(super) id: SpiffeId,
    /// When its certificate expires: a stream it holds ends then.
    pub(super) not_after: SystemTime,
}

/// What a valid X509-SVID client certificate says, as far as callers go.
#[derive(Clone)]
struct Known {
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Client certificates already checked, by their DER. Cleared when it reaches [`KNOWN_LIMIT`]
/// entries: a few thousand nodes' certificates, each renewed within hours.
static KNOWN: LazyLock<Mutex<HashMap<Box<[u8]>, Known>>> = LazyLock::new(Mutex::default);

/// How many client certificates [`KNOWN`] holds at most.
const KNOWN_LIMIT: usize = 4096;

/// The caller, from the mTLS client certificate, valid now; UNAUTHENTICATED otherwise.
pub(super) fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("no client certificate: call over mTLS with an X509-SVID")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let known = known(leaf.as_ref())?;
    let now = SystemTime::now();
    if now >= known.not_after {
        return Err(Status::unauthenticated(format!(
            "client certificate expired at {}: reconnect with a renewed SVID",
            rfc3339(known.not_after)
        )));
    }
    if now < known.not_before {
        return Err(Status::unauthenticated(format!(
            "client certificate is not valid before {}",
            rfc3339(known.not_before)
        )));
    }
    Ok(Peer {
        id: known.id,
        not_after: known.not_after,
    })
}

/// What the client certificate `der` says, from [`KNOWN`] or checked now.
fn known(der: &[u8]) -> Result<Known, Status> {
    let lock = || KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = lock().get(der) {
        return Ok(known.clone());
    }
    let svid = validate_leaf(der).map_err(|e| {
        Status::unauthenticated(format!("client certificate is not an X509-SVID: {e}"))
    })?;
    let known = Known {
        id: svid.spiffe_id().clone(),
        not_before: svid.not_before(),
        not_after: svid.not_after(),
    };
    let mut cache = lock();
    if cache.len() >= KNOWN_LIMIT {
        cache.clear();
    }
    cache.insert(der.into(), known.clone());
    Ok(known)
}

/// The caller's SPIFFE ID (see [`peer`]).
pub(super) fn caller_id<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
    peer(request).map(|peer| peer.id)
}

/// The token of an `authorization: Bearer <token>` header, if there is one. Errors never quote
/// the header: it is a credential.
pub(super) fn bearer_token<T>(request: &Request<T>) -> Result<Option<SecretString>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let malformed = || Status::unauthenticated("authorization header is not \"Bearer <token>\"");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(SecretString::from(token.to_owned())))
}

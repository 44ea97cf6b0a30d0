//! Who is calling: the SPIFFE ID in the client certificate rustls verified against the bundle.
//!
//! rustls checks the certificate's dates once, at the handshake; a connection can outlive the
//! certificate, so every request checks them again.

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

/// The caller, from the mTLS client certificate, valid now; UNAUTHENTICATED otherwise.
pub(super) fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("no client certificate: call over mTLS with an X509-SVID")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let svid = validate_leaf(leaf.as_ref()).map_err(|e| {
        Status::unauthenticated(format!("client certificate is not an X509-SVID: {e}"))
    })?;
    let now = SystemTime::now();
    if now >= svid.not_after() {
        return Err(Status::unauthenticated(format!(
            "client certificate expired at {}: reconnect with a renewed SVID",
            rfc3339(svid.not_after())
        )));
    }
    if now < svid.not_before() {
        return Err(Status::unauthenticated(format!(
            "client certificate is not valid before {}",
            rfc3339(svid.not_before())
        )));
    }
    Ok(Peer {
        id: svid.spiffe_id().clone(),
        not_after: svid.not_after(),
    })
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

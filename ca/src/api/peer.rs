//! Who is calling: the SPIFFE ID in the client certificate rustls verified against the bundle.

use halyard_proto::{SpiffeId, validate_leaf};
use tonic::{Request, Status};

/// The caller's SPIFFE ID, from the mTLS client certificate; UNAUTHENTICATED without one.
pub(super) fn caller_id<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("no client certificate: call over mTLS with an X509-SVID")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    validate_leaf(leaf.as_ref())
        .map(|svid| svid.spiffe_id().clone())
        .map_err(|e| {
            Status::unauthenticated(format!("client certificate is not an X509-SVID: {e}"))
        })
}

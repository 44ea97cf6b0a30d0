//! The gRPC services: what the CA says on the wire. Knows no SQL; every error becomes a
//! `Status` in one place ([`status`]).

mod admin;
mod istio;
mod node;
mod peer;
mod status;
mod svid;
mod trust;

pub use admin::AdminApi;
pub use istio::{IMPERSONATED_IDENTITY, IstioApi};
pub use node::NodeApi;
pub use svid::SvidApi;
pub use trust::TrustApi;

use std::time::SystemTime;

use halyard_proto::api::ca;

use crate::authority::IssuedSvid;

/// An issued certificate as the wire carries it.
fn svid_message(svid: &IssuedSvid) -> ca::X509Svid {
    ca::X509Svid {
        spiffe_id: svid.spiffe_id.to_string(),
        cert_chain: svid.chain().map(<[u8]>::to_vec).collect(),
        expires_at: unix_secs(svid.not_after),
        serial: svid.serial.to_string(),
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

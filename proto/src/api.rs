//! The gRPC contracts, generated from `proto/halyard/ca/v1/*.proto` and Istio's
//! `security/v1alpha1/ca.proto` at build time (protox + tonic-prost-build, no system protoc).

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// `halyard.ca.v1`: node attestation, workload certificates, trust updates, administration.
pub mod halyard {
    pub mod ca {
        pub mod v1 {
            tonic::include_proto!("halyard.ca.v1");
        }
    }
}

/// `istio.v1.auth`: Istio's certificate service, as istio-agent and ztunnel call it.
pub mod istio {
    pub mod v1 {
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// The SPIFFE Workload API (its proto has no package).
pub mod workload {
    tonic::include_proto!("_");
}

pub use halyard::ca::v1 as ca;
pub use istio::v1::auth as istio_auth;

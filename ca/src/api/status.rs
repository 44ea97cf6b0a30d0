//! Every error the CA can answer with, mapped to a gRPC status in one place.

use tonic::{Code, Status};

use crate::authority::SignError;
use crate::kube::{PodIndexError, TokenError};
use crate::server::IssueError;
use crate::store::StoreError;

/// The status a client sees for an issuing failure.
pub(super) fn issue_status(err: &IssueError) -> Status {
    Status::new(issue_code(err), err.to_string())
}

/// The code of an issuing failure.
pub(super) fn issue_code(err: &IssueError) -> Code {
    match err {
        IssueError::Csr(_) => Code::InvalidArgument,
        IssueError::Sign(sign) => match sign {
            SignError::NotAuthorized { .. }
            | SignError::DnsNameNotAllowed { .. }
            | SignError::WrongTrustDomain { .. } => Code::PermissionDenied,
            SignError::IntermediateExpired(_) | SignError::IntermediateNotYetValid(_) => {
                Code::FailedPrecondition
            }
            SignError::Sign(_) => Code::Internal,
            _ => Code::InvalidArgument,
        },
        IssueError::Busy(_)
        | IssueError::RateLimited { .. }
        | IssueError::IdentityRateLimited { .. } => Code::ResourceExhausted,
        IssueError::Journal(_) => Code::Unavailable,
    }
}

/// The status for a store failure outside issuing.
pub(super) fn store_status(err: &StoreError) -> Status {
    Status::unavailable(format!("store: {err}"))
}

/// The status for a refused or unverifiable service-account token.
pub(super) fn token_status(err: &TokenError) -> Status {
    let code = match err {
        TokenError::NotAnAgent(_) => Code::PermissionDenied,
        TokenError::Api(_) => Code::Unavailable,
        _ => Code::Unauthenticated,
    };
    Status::new(code, err.to_string())
}

/// The status when the pod index cannot authorize: UNAVAILABLE until it has listed the pods,
/// PERMISSION_DENIED when the pod it is asked about runs on no node it knows.
pub(super) fn pods_status(err: &PodIndexError) -> Status {
    let code = match err {
        PodIndexError::NotReady => Code::Unavailable,
        _ => Code::PermissionDenied,
    };
    Status::new(code, err.to_string())
}

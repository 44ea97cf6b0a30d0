//! The seam between the cache and the CA: the real client batches to `SignX509Svids`; tests sign
//! with a local CA.

use halyard_proto::{SpiffeId, Ttl};

/// One CSR for the CA.
#[derive(Clone, Debug)]
pub struct SignRequest {
    /// The identity asked for.
    pub spiffe_id: SpiffeId,
    /// DER CSR carrying that identity.
    pub csr: Vec<u8>,
    /// Lifetime asked for.
    pub ttl: Option<Ttl>,
}

/// What the CA returned for one CSR.
#[derive(Clone, Debug)]
pub struct SignedChain {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// Signs batches of CSRs.
#[tonic::async_trait]
pub trait SvidSigner: Send + Sync + 'static {
    /// One result per request, in order; `Err` for the whole batch when the CA could not be
    /// asked at all.
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String>;
}

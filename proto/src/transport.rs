//! gRPC over unix sockets, used on both sides: the CA's admin socket and the agent's socket.

use std::path::PathBuf;

use tonic::transport::{Channel, Endpoint};

/// A gRPC channel to the unix socket at `path`.
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by the API but unused: every connection goes to the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
}

/// An error and its sources, joined with `: `, for messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_an_error_that_names_the_cause() {
        let err = unix_channel(PathBuf::from("/nonexistent/x.sock"))
            .await
            .unwrap_err();
        assert!(
            error_chain(&err).contains("No such file or directory"),
            "{}",
            error_chain(&err)
        );
    }
}

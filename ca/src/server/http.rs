//! HTTP: `/metrics`, `/healthz` (the process answers), `/readyz` (it can issue).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Ca;

pub(super) async fn serve(
    listener: TcpListener,
    ca: Arc<Ca>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/crl/{name}", get(crl))
        .with_state(ca);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(ca): State<Arc<Ca>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ca.metrics().encode(),
    )
}

/// `GET /crl/<authority>.crl`: the CRL of that intermediate, DER.
async fn crl(State(ca): State<Arc<Ca>>, Path(name): Path<String>) -> axum::response::Response {
    let state = ca.revocation_state();
    match name.strip_suffix(".crl").and_then(|id| state.crl(id)) {
        Some(crl) => ([("content-type", "application/pkix-crl")], crl.to_vec()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no CRL named {name}: try /crl/{}.crl\n",
                ca.authority().id()
            ),
        )
            .into_response(),
    }
}

async fn ready(State(ca): State<Arc<Ca>>) -> impl IntoResponse {
    if ca.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid intermediate\n")
    }
}

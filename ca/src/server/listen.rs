//! The listeners: gRPC over TLS, the admin socket and HTTP, all stopped by one token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use halyard_proto::api::ca::admin_service_server::AdminServiceServer;
use halyard_proto::api::ca::node_service_server::NodeServiceServer;
use halyard_proto::api::ca::svid_service_server::SvidServiceServer;
use halyard_proto::api::ca::trust_service_server::TrustServiceServer;
use halyard_proto::api::istio_auth::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::service::InterceptorLayer;
use tracing::{debug, info, warn};

use super::{Ca, KubeAuth, ServerError, admin_socket, http, tls};
use crate::api::{AdminApi, IstioApi, NodeApi, SvidApi, TrustApi};

/// Largest gRPC message accepted: a batch of 256 CSRs is well under it.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds every listener and serves until `shutdown` is cancelled.
pub(super) async fn serve(
    ca: Arc<Ca>,
    kubernetes: Option<KubeAuth>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let config = ca.config().clone();
    let serving = tls::serving_cert(ca.clone(), shutdown.clone()).await?;
    let acceptor = TlsAcceptor::from(tls::server_config(&ca, serving)?);

    let tcp = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| ServerError::Listen {
            what: "gRPC listener",
            addr: config.grpc_listen.to_string(),
            source,
        })?;
    let admin_error = |source| ServerError::Listen {
        what: "admin socket",
        addr: config.admin_socket.display().to_string(),
        source,
    };
    let owner = admin_socket::OwnerOnly::new(admin_socket::own_uid().await.map_err(admin_error)?);
    let admin = admin_socket::bind(&config.admin_socket).map_err(admin_error)?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServerError::Listen {
            what: "HTTP listener",
            addr: config.http_listen.to_string(),
            source,
        })?;

    info!(
        grpc = %config.grpc_listen,
        http = %config.http_listen,
        admin = %config.admin_socket.display(),
        trust_domain = %config.trust_domain,
        "halyard-ca serving"
    );
    println!(
        "halyard-ca is serving {} on {} (gRPC over TLS) and {} (HTTP)\n  trust bundle: {}\n  join token:   halyard-ca token create --admin-socket {} --node NODE",
        config.trust_domain,
        config.grpc_listen,
        config.http_listen,
        config.data_dir.join("bundle.pem").display(),
        config.admin_socket.display(),
    );

    spawn_housekeeping(ca.clone(), shutdown.clone());

    let tokens = kubernetes.as_ref().map(|k| k.tokens.clone());
    let mut nodes = NodeApi::new(ca.clone(), tokens.clone());
    let mut svids = SvidApi::new(ca.clone());
    let mut istio = IstioApi::new(ca.clone(), tokens);
    if let Some(kubernetes) = kubernetes {
        nodes = nodes.with_pods(kubernetes.pods.clone());
        svids = svids.with_pods(kubernetes.pods.clone());
        istio = istio.with_impersonation(kubernetes.pods, kubernetes.ztunnel_service_accounts);
    }
    let grpc = {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(accept_tls(tcp, acceptor, tx, shutdown.clone()));
        tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(nodes).max_decoding_message_size(MAX_MESSAGE_BYTES))
            .add_service(SvidServiceServer::new(svids).max_decoding_message_size(MAX_MESSAGE_BYTES))
            .add_service(
                TrustServiceServer::new(TrustApi::new(ca.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                IstioCertificateServiceServer::new(istio)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                ReceiverStream::new(rx),
                shutdown.clone().cancelled_owned(),
            )
    };
    let admin = tonic::transport::Server::builder()
        .layer(InterceptorLayer::new(move |request| owner.check(request)))
        .add_service(AdminServiceServer::new(AdminApi::new(ca.clone())))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(admin),
            shutdown.clone().cancelled_owned(),
        );
    let http = http::serve(http, ca.clone(), shutdown.clone());

    let result = tokio::select! {
        r = grpc => r.map_err(|e| listen_error("gRPC server", &config.grpc_listen.to_string(), e)),
        r = admin => r.map_err(|e| listen_error("admin socket", &config.admin_socket.display().to_string(), e)),
        r = http => r.map_err(|source| ServerError::Listen { what: "HTTP server", addr: config.http_listen.to_string(), source }),
    };
    shutdown.cancel();
    let _ = std::fs::remove_file(&config.admin_socket);
    result
}

fn listen_error(what: &'static str, addr: &str, e: tonic::transport::Error) -> ServerError {
    ServerError::Listen {
        what,
        addr: addr.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Accepts TCP connections and hands each, after its TLS handshake, to the gRPC server. Each
/// handshake runs in its own task, so a slow client cannot hold up the others.
async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: tokio::sync::mpsc::Sender<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Background chores: journal pruning and journal metrics.
fn spawn_housekeeping(ca: Arc<Ca>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
        let mut prune_tick = tokio::time::interval(Duration::from_secs(3600));
        // Re-sign the CRL (and drop expired revocations) well before it lapses.
        let mut crl_tick = tokio::time::interval(super::CRL_VALIDITY / 2);
        crl_tick.tick().await;
        // Revocations and authority changes made through other replicas (PostgreSQL
        // LISTEN/NOTIFY).
        let mut revocations = ca.store().subscribe_revocations();
        let mut authorities = ca.store().subscribe_authorities();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = metrics_tick.tick() => ca.metrics().observe_journal(&ca.store().journal_stats()),
                changed = revocations.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Err(e) = ca.refresh_revocations().await {
                        warn!(error = %e, "cannot reload revocations");
                    }
                }
                changed = authorities.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if let Err(e) = ca.reload_authorities().await {
                        warn!(error = %e, "cannot reload authorities");
                    }
                }
                _ = crl_tick.tick() => {
                    if let Err(e) = ca.refresh_revocations().await {
                        warn!(error = %e, "cannot re-sign the CRL");
                    }
                }
                _ = prune_tick.tick() => {
                    let before = SystemTime::now() - ca.config().journal_retention.as_duration();
                    match ca.store().prune_journal(before).await {
                        Ok(0) => {}
                        Ok(n) => info!(rows = n, "pruned journal rows of long-expired certificates"),
                        Err(e) => warn!(error = %e, "journal pruning failed"),
                    }
                }
            }
        }
    });
}

//! `halyard-agent api fetch` and `halyard-agent healthcheck`: Workload API clients.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use halyard_proto::api::workload::X509svidRequest;
use halyard_proto::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use halyard_proto::files::{self, Overwrite};
use halyard_proto::transport::{error_chain, unix_channel};
use tonic::transport::Channel;

async fn connect(socket: PathBuf) -> Result<SpiffeWorkloadApiClient<Channel>, String> {
    let channel = unix_channel(socket.clone()).await.map_err(|e| {
        format!(
            "cannot reach the agent at {}: {}",
            socket.display(),
            error_chain(&e)
        )
    })?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn request() -> tonic::Request<X509svidRequest> {
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// Splits concatenated DER certificates.
fn split_der(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match x509_parser::parse_x509_certificate(bytes) {
            Ok((rest, _)) => {
                out.push(bytes[..bytes.len() - rest.len()].to_vec());
                bytes = rest;
            }
            Err(_) => break,
        }
    }
    out
}

#[derive(Debug, Subcommand)]
pub(super) enum ApiCommand {
    /// Fetch this process's X509-SVIDs from the agent and print (or write) them.
    Fetch {
        /// The agent's socket.
        #[arg(long, default_value = "/run/halyard/agent.sock")]
        socket: PathBuf,
        /// Write svid.N.pem, svid.N.key (0600) and bundle.N.pem into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

impl ApiCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        let ApiCommand::Fetch { socket, write } = self;
        let mut stream = connect(socket)
            .await?
            .fetch_x509svid(request())
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let response = stream
            .message()
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .ok_or("the agent closed the stream without an answer")?;
        for (n, svid) in response.svids.iter().enumerate() {
            let chain = split_der(&svid.x509_svid);
            let serial = chain
                .first()
                .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
                .map(|(_, c)| c.raw_serial_as_string())
                .unwrap_or_default();
            println!(
                "SVID {n}: {} (serial {serial}, {} certificates)",
                svid.spiffe_id,
                chain.len()
            );
            if let Some(dir) = &write {
                let pem = |label: &str, ders: &[Vec<u8>]| -> String {
                    ders.iter()
                        .map(|d| pem::encode(&pem::Pem::new(label, d.clone())))
                        .collect()
                };
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("--write {}: {e}", dir.display()))?;
                let key = zeroize::Zeroizing::new(pem::encode(&pem::Pem::new(
                    "PRIVATE KEY",
                    svid.x509_svid_key.clone(),
                )));
                files::write_public(
                    &dir.join(format!("svid.{n}.pem")),
                    pem("CERTIFICATE", &chain).as_bytes(),
                    Overwrite::Allow,
                )
                .map_err(|e| e.to_string())?;
                files::write_secret(
                    &dir.join(format!("svid.{n}.key")),
                    key.as_bytes(),
                    Overwrite::Allow,
                )
                .map_err(|e| e.to_string())?;
                files::write_public(
                    &dir.join(format!("bundle.{n}.pem")),
                    pem("CERTIFICATE", &split_der(&svid.bundle)).as_bytes(),
                    Overwrite::Allow,
                )
                .map_err(|e| e.to_string())?;
                println!(
                    "  wrote {}/svid.{n}.pem, svid.{n}.key, bundle.{n}.pem",
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// `healthcheck`'s flags.
#[derive(Debug, Args)]
pub(super) struct HealthArgs {
    /// The agent's socket.
    #[arg(long, default_value = "/run/halyard/agent.sock")]
    socket: PathBuf,
}

impl HealthArgs {
    /// Healthy when the agent answers a Workload API call: with SVIDs, or with a refusal (the
    /// caller may hold none) — either way it is serving.
    pub(super) async fn run(self) -> Result<(), String> {
        let shown = self.socket.display().to_string();
        let mut client = connect(self.socket).await?;
        match client.fetch_x509svid(request()).await {
            Ok(_) => {
                println!("agent at {shown} is serving");
                Ok(())
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                println!("agent at {shown} is serving (this process holds no identity)");
                Ok(())
            }
            Err(s) => Err(format!("agent at {shown}: {:?}: {}", s.code(), s.message())),
        }
    }
}

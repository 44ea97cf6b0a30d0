//! `halyard-ca authority`: the signing authorities of the running CA (admin socket).

use std::path::PathBuf;

use clap::Subcommand;
use halyard_proto::api::ca::{
    ActivateAuthorityRequest, AuthorityInfo, ListAuthoritiesRequest, PrepareAuthorityRequest,
    TaintAuthorityRequest, prepare_authority_response,
};

use super::admin::{AdminTarget, status_text};
use crate::files::{self, Overwrite};

#[derive(Debug, Subcommand)]
pub(super) enum AuthorityCommand {
    /// List every authority: id, state, expiry, whether this CA can sign with it, its subject.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Prepare the next authority. With --csr-out: write a CSR for the offline root to sign
    /// (`halyard-ca root sign-intermediate`), then run again with --cert. In --dev mode, with
    /// neither: the development root signs it at once.
    Prepare {
        #[command(flatten)]
        target: AdminTarget,
        /// Write the new key's CSR here.
        #[arg(long, conflicts_with = "cert")]
        csr_out: Option<PathBuf>,
        /// The root-signed certificate for that CSR (then any upstream intermediates), PEM.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Make a prepared (or old) authority the one that signs.
    Activate {
        #[command(flatten)]
        target: AdminTarget,
        /// The authority's id (from `authority list`).
        id: String,
    },
    /// Mark an authority compromised: if active, the newest prepared one takes over, and every
    /// agent replaces every certificate it signed.
    Taint {
        #[command(flatten)]
        target: AdminTarget,
        /// The authority's id (from `authority list`).
        id: String,
    },
}

fn print_authority(a: &AuthorityInfo) {
    let expires = crate::authority::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(a.not_after.max(0).unsigned_abs()),
    );
    let usable = if a.usable { "usable" } else { "unusable-here" };
    println!(
        "{}\t{}\texpires={}\t{}\t{}",
        a.id, a.state, expires, usable, a.subject
    );
}

impl AuthorityCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        match self {
            AuthorityCommand::List { target } => {
                let list = target
                    .connect()
                    .await?
                    .list_authorities(ListAuthoritiesRequest {})
                    .await
                    .map_err(status_text)?
                    .into_inner();
                list.authorities.iter().for_each(print_authority);
            }
            AuthorityCommand::Prepare {
                target,
                csr_out,
                cert,
            } => {
                let certificate_pem = match &cert {
                    Some(path) => files::read_public(path).map_err(|e| e.to_string())?,
                    None => Vec::new(),
                };
                let response = target
                    .connect()
                    .await?
                    .prepare_authority(PrepareAuthorityRequest {
                        certificate_pem,
                        want_csr: csr_out.is_some(),
                    })
                    .await
                    .map_err(|s| match &cert {
                        Some(path) => format!("--cert {}: {}", path.display(), status_text(s)),
                        None => status_text(s),
                    })?
                    .into_inner();
                match (response.result, csr_out) {
                    (Some(prepare_authority_response::Result::CsrPem(csr)), Some(out)) => {
                        files::write_public(&out, csr.as_bytes(), Overwrite::Allow)
                            .map_err(|e| format!("--csr-out: {e}"))?;
                        println!(
                            "wrote {}: sign it with `halyard-ca root sign-intermediate`, then run \
                             `halyard-ca authority prepare --cert FILE`",
                            out.display()
                        );
                    }
                    (Some(prepare_authority_response::Result::Authority(a)), _) => {
                        print_authority(&a);
                    }
                    _ => return Err("the CA sent an unexpected answer".to_owned()),
                }
            }
            AuthorityCommand::Activate { target, id } => {
                let response = target
                    .connect()
                    .await?
                    .activate_authority(ActivateAuthorityRequest { id })
                    .await
                    .map_err(status_text)?
                    .into_inner();
                if let Some(a) = response.authority {
                    print_authority(&a);
                }
            }
            AuthorityCommand::Taint { target, id } => {
                let response = target
                    .connect()
                    .await?
                    .taint_authority(TaintAuthorityRequest { id })
                    .await
                    .map_err(status_text)?
                    .into_inner();
                if let Some(a) = response.tainted {
                    print_authority(&a);
                }
                if let Some(a) = response.activated {
                    print_authority(&a);
                }
            }
        }
        Ok(())
    }
}

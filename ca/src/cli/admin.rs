//! Commands that drive the running CA over its admin socket.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use halyard_proto::api::ca::admin_service_client::AdminServiceClient;
use halyard_proto::api::ca::{AddRootRequest, BanNodeRequest, ListNodesRequest, RemoveRootRequest};
use halyard_proto::api::ca::{
    CreateEntryRequest, CreateJoinTokenRequest, DeleteEntryRequest, Entry, GetBundleRequest,
    HealthRequest, ListEntriesRequest, RevokeRequest, Selector, revoke_request,
};
use halyard_proto::transport::{error_chain, unix_channel};
use halyard_proto::{TrustBundle, Ttl};
use tonic::transport::Channel;

use crate::files;

/// Where the running CA's admin socket is.
#[derive(Debug, Args)]
pub(crate) struct AdminTarget {
    /// The CA's data directory (its admin.sock).
    #[arg(
        long,
        conflicts_with = "admin_socket",
        required_unless_present = "admin_socket"
    )]
    data_dir: Option<PathBuf>,
    /// The admin socket itself.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
}

impl AdminTarget {
    fn path(&self) -> PathBuf {
        match (&self.admin_socket, &self.data_dir) {
            (Some(socket), _) => socket.clone(),
            (None, Some(dir)) => dir.join("admin.sock"),
            (None, None) => PathBuf::from("admin.sock"),
        }
    }

    pub(super) async fn connect(&self) -> Result<AdminServiceClient<Channel>, String> {
        let path = self.path();
        let channel = unix_channel(path.clone()).await.map_err(|e| {
            format!(
                "cannot reach the CA's admin socket {}: {}",
                path.display(),
                error_chain(&e)
            )
        })?;
        Ok(AdminServiceClient::new(channel))
    }
}

pub(super) fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a single-use join token for a node; prints only the token.
    Create {
        #[command(flatten)]
        target: AdminTarget,
        /// The node's name: its SVID will be spiffe://<td>/halyard/node/<NODE>.
        #[arg(long)]
        node: String,
        /// How long the token can be used.
        #[arg(long)]
        ttl: Option<Ttl>,
    },
}

impl TokenCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        let TokenCommand::Create { target, node, ttl } = self;
        let response = target
            .connect()
            .await?
            .create_join_token(CreateJoinTokenRequest {
                node,
                ttl_seconds: ttl.map_or(0, Ttl::as_secs),
            })
            .await
            .map_err(status_text)?
            .into_inner();
        println!("{}", response.token);
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum EntryCommand {
    /// Register which workloads on which nodes may hold a SPIFFE ID.
    Create {
        #[command(flatten)]
        target: AdminTarget,
        /// The node whose workloads may hold the ID.
        #[arg(long, required_unless_present = "any_node")]
        node: Option<String>,
        /// Workloads on any node may hold the ID.
        #[arg(long, conflicts_with = "node")]
        any_node: bool,
        /// The SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        /// KIND:KEY:VALUE, e.g. unix:uid:1000 (repeatable; all must match).
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// Lifetime of its certificates (default: the CA's).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// DNS names its certificates carry (repeatable).
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
    },
    /// List entries, all or one node's (its own and any-node ones).
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// Only this node's entries.
        #[arg(long)]
        node: Option<String>,
    },
    /// Delete an entry by id.
    Delete {
        #[command(flatten)]
        target: AdminTarget,
        /// The entry's id (from `entry list`).
        #[arg(long)]
        id: String,
    },
}

fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(kind), Some(key), Some(value)) if !kind.is_empty() && !key.is_empty() => {
            Ok(Selector {
                kind: kind.to_owned(),
                key: key.to_owned(),
                value: value.to_owned(),
            })
        }
        _ => Err(format!(
            "--selector {text:?}: expected KIND:KEY:VALUE, e.g. unix:uid:1000"
        )),
    }
}

fn print_entry(entry: &Entry) {
    let node = if entry.any_node { "*" } else { &entry.node };
    let selectors: Vec<String> = entry
        .selectors
        .iter()
        .map(|s| format!("{}:{}:{}", s.kind, s.key, s.value))
        .collect();
    println!(
        "{}\t{}\tnode={}\tselectors={}\tttl={}\tdns={}",
        entry.id,
        entry.spiffe_id,
        node,
        selectors.join(","),
        entry.ttl_seconds,
        entry.dns_names.join(",")
    );
}

impl EntryCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        match self {
            EntryCommand::Create {
                target,
                node,
                any_node,
                spiffe_id,
                selectors,
                ttl,
                dns_names,
            } => {
                let selectors = selectors
                    .iter()
                    .map(|s| parse_selector(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let entry = Entry {
                    id: String::new(),
                    spiffe_id,
                    node: node.unwrap_or_default(),
                    any_node,
                    selectors,
                    ttl_seconds: ttl.map_or(0, Ttl::as_secs),
                    dns_names,
                };
                let created = target
                    .connect()
                    .await?
                    .create_entry(CreateEntryRequest { entry: Some(entry) })
                    .await
                    .map_err(status_text)?
                    .into_inner();
                if let Some(entry) = created.entry {
                    print_entry(&entry);
                }
            }
            EntryCommand::List { target, node } => {
                let list = target
                    .connect()
                    .await?
                    .list_entries(ListEntriesRequest {
                        node: node.unwrap_or_default(),
                    })
                    .await
                    .map_err(status_text)?
                    .into_inner();
                list.entries.iter().for_each(print_entry);
            }
            EntryCommand::Delete { target, id } => {
                target
                    .connect()
                    .await?
                    .delete_entry(DeleteEntryRequest { id: id.clone() })
                    .await
                    .map_err(status_text)?;
                println!("deleted entry {id}");
            }
        }
        Ok(())
    }
}

/// `revoke`'s flags.
#[derive(Debug, Args)]
pub(super) struct RevokeArgs {
    #[command(flatten)]
    target: AdminTarget,
    /// The certificate's serial, hex (as `openssl x509 -serial` prints it, colons allowed).
    #[arg(
        long,
        required_unless_present = "spiffe_id",
        conflicts_with = "spiffe_id"
    )]
    serial: Option<String>,
    /// Revoke every unexpired certificate of this SPIFFE ID.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Why: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded,
    /// cessationOfOperation or privilegeWithdrawn.
    #[arg(long, default_value = "unspecified")]
    reason: String,
}

impl RevokeArgs {
    pub(super) async fn run(self) -> Result<(), String> {
        let target = match (self.serial, self.spiffe_id) {
            (Some(serial), _) => revoke_request::Target::Serial(serial),
            (None, Some(id)) => revoke_request::Target::SpiffeId(id),
            (None, None) => return Err("give --serial or --spiffe-id".to_owned()),
        };
        let response = self
            .target
            .connect()
            .await?
            .revoke(RevokeRequest {
                target: Some(target),
                reason: self.reason,
            })
            .await
            .map_err(status_text)?
            .into_inner();
        if response.serials.is_empty() {
            println!("nothing to revoke: no unexpired certificate that is not already revoked");
        }
        for serial in response.serials {
            println!("revoked {serial}");
        }
        Ok(())
    }
}

/// Bundle output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum BundleFormat {
    /// PEM certificates.
    Pem,
    /// A SPIFFE bundle: JWK set with x5c, use x509-svid.
    Spiffe,
}

#[derive(Debug, Subcommand)]
pub(super) enum BundleCommand {
    /// Print the trust bundle.
    Show {
        #[command(flatten)]
        target: AdminTarget,
        /// Output format.
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
    },
    /// Add a root to the trust bundle (root rotation, step 1): agents and Envoy trust it at once.
    Add {
        #[command(flatten)]
        target: AdminTarget,
        /// The root certificate, PEM.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Remove a root from the trust bundle (root rotation, last step). Refused while the active
    /// or a prepared authority chains to it.
    Remove {
        #[command(flatten)]
        target: AdminTarget,
        /// The root certificate, PEM.
        #[arg(long)]
        cert: PathBuf,
    },
}

impl BundleCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        let (target, format) = match self {
            BundleCommand::Show { target, format } => (target, format),
            BundleCommand::Add { target, cert } => {
                let pem = files::read_public(&cert).map_err(|e| e.to_string())?;
                let response = target
                    .connect()
                    .await?
                    .add_root(AddRootRequest {
                        certificate_pem: pem,
                    })
                    .await
                    .map_err(|s| format!("--cert {}: {}", cert.display(), status_text(s)))?
                    .into_inner();
                println!(
                    "added {}: the bundle holds {} roots",
                    cert.display(),
                    response.roots
                );
                return Ok(());
            }
            BundleCommand::Remove { target, cert } => {
                let pem = files::read_public(&cert).map_err(|e| e.to_string())?;
                let response = target
                    .connect()
                    .await?
                    .remove_root(RemoveRootRequest {
                        certificate_pem: pem,
                    })
                    .await
                    .map_err(|s| format!("--cert {}: {}", cert.display(), status_text(s)))?
                    .into_inner();
                println!(
                    "removed {}: the bundle holds {} roots",
                    cert.display(),
                    response.roots
                );
                for id in response.orphaned_authorities {
                    println!("no longer trusted: certificates signed by authority {id}");
                }
                return Ok(());
            }
        };
        let bundle = target
            .connect()
            .await?
            .get_bundle(GetBundleRequest {})
            .await
            .map_err(status_text)?
            .into_inner()
            .bundle
            .ok_or("the CA sent no bundle")?;
        match format {
            BundleFormat::Pem => print!(
                "{}",
                crate::authority::certs_to_pem(bundle.roots.iter().map(Vec::as_slice))
            ),
            BundleFormat::Spiffe => {
                let td = halyard_proto::TrustDomain::new(&bundle.trust_domain).map_err(|e| {
                    format!("the CA sent trust domain {:?}: {e}", bundle.trust_domain)
                })?;
                let json = TrustBundle::new(td, bundle.roots)
                    .to_spiffe_json()
                    .map_err(|e| e.to_string())?;
                println!("{json}");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum NodeCommand {
    /// List attested nodes: name, state, current node SVID serial and expiry, how it attested.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Ban a node: it can no longer renew its SVID, sign, watch trust or attest again (even with
    /// a new join token), and its open streams end. Revoke its workloads' certificates with
    /// `halyard-ca revoke` if they must stop working before they expire.
    Ban {
        #[command(flatten)]
        target: AdminTarget,
        /// The node's name.
        name: String,
    },
}

impl NodeCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        match self {
            NodeCommand::List { target } => {
                let list = target
                    .connect()
                    .await?
                    .list_nodes(ListNodesRequest {})
                    .await
                    .map_err(status_text)?
                    .into_inner();
                for node in list.nodes {
                    let expires = crate::authority::rfc3339(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(node.not_after.max(0).unsigned_abs()),
                    );
                    println!(
                        "{}\t{}\tserial={}\texpires={}\tmethod={}",
                        node.name,
                        if node.banned { "banned" } else { "ok" },
                        node.serial,
                        expires,
                        node.method
                    );
                }
            }
            NodeCommand::Ban { target, name } => {
                target
                    .connect()
                    .await?
                    .ban_node(BanNodeRequest { name: name.clone() })
                    .await
                    .map_err(status_text)?;
                println!("banned node {name}");
            }
        }
        Ok(())
    }
}

/// `healthcheck`: exit 0 only when the CA says it is ready.
pub(super) async fn healthcheck(target: AdminTarget) -> Result<(), String> {
    let health = target
        .connect()
        .await?
        .health(HealthRequest {})
        .await
        .map_err(status_text)?
        .into_inner();
    if health.ready {
        println!("{}", health.message);
        Ok(())
    } else {
        Err(health.message)
    }
}

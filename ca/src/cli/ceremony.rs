//! The offline ceremony and the one-shot signer on the command line.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use halyard_proto::{SpiffeId, TrustDomain, Ttl};

use crate::authority::{Grant, KeyType};
use crate::ceremony::{self, DataDir, RootDir};

#[derive(Debug, Subcommand)]
pub(super) enum RootCommand {
    /// Create a new self-signed root: DIR/root.crt and DIR/root.key (0600).
    Init {
        /// The trust domain the root serves, e.g. cluster.local.
        #[arg(long)]
        trust_domain: TrustDomain,
        /// Directory for root.crt and root.key; created 0700 if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The root's key type.
        #[arg(long, default_value = "ec-p256", value_parser = ["ec-p256", "ec-p384", "rsa-3072"])]
        key_type: String,
        /// How long the root is valid.
        #[arg(long, default_value = "10y")]
        ttl: Ttl,
    },
    /// Sign an intermediate CSR with the root.
    SignIntermediate {
        /// Directory holding root.crt and root.key.
        #[arg(long)]
        dir: PathBuf,
        /// The intermediate's CSR (from `halyard-ca intermediate csr`).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the intermediate certificate, PEM.
        #[arg(long)]
        out: PathBuf,
        /// How long the intermediate is valid (at most until the root expires).
        #[arg(long, default_value = "1y")]
        ttl: Ttl,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum IntermediateCommand {
    /// Create the intermediate's key in the data dir (0600) and write its CSR.
    Csr {
        /// The CA's data directory; created 0700 if missing.
        #[arg(long)]
        data_dir: PathBuf,
        /// The trust domain the intermediate serves.
        #[arg(long)]
        trust_domain: TrustDomain,
        /// Where to write the CSR, PEM.
        #[arg(long)]
        out: PathBuf,
        /// The intermediate's key type.
        #[arg(long, default_value = "ec-p256", value_parser = ["ec-p256", "ec-p384"])]
        key_type: String,
    },
    /// Import the signed intermediate after checking it against its key and the root.
    Import {
        /// The CA's data directory (holding intermediate.key).
        #[arg(long)]
        data_dir: PathBuf,
        /// The intermediate certificate, PEM, optionally followed by upstream intermediates.
        #[arg(long)]
        cert: PathBuf,
        /// The root certificate(s), PEM: becomes the data dir's bundle.pem.
        #[arg(long)]
        root: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(super) struct SignArgs {
    /// The CA's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The workload's CSR, PEM or DER.
    #[arg(long)]
    csr: PathBuf,
    /// The SPIFFE ID to issue; the CSR must carry exactly this URI SAN.
    #[arg(long)]
    spiffe_id: SpiffeId,
    /// DNS names the certificate may carry (repeatable).
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
    /// Lifetime (clamped to the policy's maximum, 24h, and the intermediate's end).
    #[arg(long, default_value = "1h")]
    ttl: Ttl,
    /// Where to write the chain (leaf, then intermediates), PEM.
    #[arg(long)]
    out: PathBuf,
}

impl RootCommand {
    pub(super) fn run(self, now: SystemTime) -> Result<(), String> {
        match self {
            RootCommand::Init {
                trust_domain,
                dir,
                key_type,
                ttl,
            } => {
                let dir = RootDir::new(dir);
                let root =
                    ceremony::root_init(&dir, &trust_domain, key_type_of(&key_type)?, ttl, now)
                        .map_err(|e| e.to_string())?;
                println!(
                    "created root for {} ({}): {} and {} (keep the key offline)",
                    root.trust_domain(),
                    root.key().key_type(),
                    dir.cert().display(),
                    dir.key().display()
                );
            }
            RootCommand::SignIntermediate { dir, csr, out, ttl } => {
                ceremony::root_sign_intermediate(&RootDir::new(dir), &csr, &out, ttl, now)
                    .map_err(|e| e.to_string())?;
                println!("wrote intermediate certificate {}", out.display());
            }
        }
        Ok(())
    }
}

impl IntermediateCommand {
    pub(super) fn run(self, now: SystemTime) -> Result<(), String> {
        match self {
            IntermediateCommand::Csr {
                data_dir,
                trust_domain,
                out,
                key_type,
            } => {
                let data = DataDir::new(data_dir);
                let reused = ceremony::intermediate_csr(
                    &data,
                    &trust_domain,
                    key_type_of(&key_type)?,
                    &out,
                    now,
                )
                .map_err(|e| e.to_string())?;
                let key = data.intermediate_key();
                if reused {
                    println!(
                        "reused the existing key {}; wrote CSR {}",
                        key.display(),
                        out.display()
                    );
                } else {
                    println!("created key {}; wrote CSR {}", key.display(), out.display());
                }
            }
            IntermediateCommand::Import {
                data_dir,
                cert,
                root,
            } => {
                let data = DataDir::new(data_dir);
                let authority = ceremony::intermediate_import(&data, &cert, &root, now)
                    .map_err(|e| e.to_string())?;
                println!(
                    "imported intermediate for {} into {} (bundle {})",
                    authority.trust_domain(),
                    data.intermediate_cert().display(),
                    data.bundle().display()
                );
            }
        }
        Ok(())
    }
}

impl SignArgs {
    pub(super) fn run(self, now: SystemTime) -> Result<(), String> {
        let args = self;

        let grant = Grant {
            dns_names: args.dns_names,
            ..Grant::new(args.spiffe_id)
        };
        let svid = ceremony::sign(
            &DataDir::new(args.data_dir),
            &args.csr,
            &grant,
            Some(args.ttl),
            &args.out,
            now,
        )
        .map_err(|e| e.to_string())?;
        println!(
            "issued {} serial {} until {}: wrote {}",
            svid.spiffe_id,
            svid.serial,
            crate::authority::rfc3339(svid.not_after),
            args.out.display()
        );
        Ok(())
    }
}

fn key_type_of(name: &str) -> Result<KeyType, String> {
    name.parse()
        .map_err(|e: crate::authority::KeyError| e.to_string())
}

//! `halyard-ca audit`: the issuance journal, read from the store itself (no running CA needed),
//! and `audit verify`'s three checks: the hash chain, the authorities' chains to the bundle
//! ([`chains`]) and revoked serials in the current CRLs ([`crls`], fetched with [`fetch`]).

mod chains;
mod crls;
mod fetch;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};

use crate::authority::rfc3339;
use crate::store::{JournalQuery, JournalRow, Revocation, Store, StoreError, StoreOptions};
use crls::hex;
use fetch::CrlBase;

/// Which store to read.
#[derive(Debug, Args)]
pub(super) struct StoreTarget {
    /// The CA's data directory (its SQLite halyard.db).
    #[arg(
        long,
        required_unless_present = "store_url",
        conflicts_with = "store_url"
    )]
    data_dir: Option<PathBuf>,
    /// A store URL: sqlite://… or postgres://…
    #[arg(long)]
    store_url: Option<String>,
}

impl StoreTarget {
    async fn open(&self) -> Result<Store, String> {
        let url = match (&self.store_url, &self.data_dir) {
            (Some(url), _) => url.clone(),
            (None, Some(dir)) => {
                let db = dir.join("halyard.db");
                if !db.exists() {
                    return Err(format!(
                        "{} does not exist: no journal in {}",
                        db.display(),
                        dir.display()
                    ));
                }
                format!("sqlite://{}", db.display())
            }
            (None, None) => return Err("give --data-dir or --store-url".to_owned()),
        };
        Store::open(&url, StoreOptions::default())
            .await
            .map_err(|e| format!("cannot open the store: {e}"))
    }
}

/// Export formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// List issued certificates, oldest first.
    List {
        #[command(flatten)]
        store: StoreTarget,
        /// Only certificates of this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
    },
    /// Check the journal's hash chain, that every journaled certificate's authority chains to a
    /// root of the bundle, and (with --crl-url or --crl) that every revoked serial is in its
    /// authority's current CRL; exit 1 if anything fails.
    Verify(VerifyArgs),
    /// Export the whole journal, with each row's revocation.
    Export {
        #[command(flatten)]
        store: StoreTarget,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

/// `audit verify`.
#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    store: StoreTarget,
    /// The trust bundle (PEM) every authority must chain to [default: the data directory's
    /// bundle.pem; required with --store-url].
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// Fetch each authority's current CRL from the running CA: BASE/<authority id>.crl, e.g.
    /// http://127.0.0.1:9090/crl (the CA's HTTP listener).
    #[arg(long, value_name = "BASE")]
    crl_url: Option<CrlBase>,
    /// A CRL to check revocations against, DER or PEM; repeat for several authorities. With
    /// several CRLs of one authority, the newest (thisUpdate) counts.
    #[arg(long = "crl", value_name = "FILE")]
    crls: Vec<PathBuf>,
}

/// Rows read per query while walking the journal.
const PAGE: u64 = 10_000;

/// Calls `each` on every journal row in `seq` order, a page at a time; returns how many.
async fn each_row(
    store: &Store,
    mut each: impl FnMut(&JournalRow),
) -> Result<u64, (Option<i64>, StoreError)> {
    let mut after = None;
    let mut count = 0;
    loop {
        let page = store
            .journal(JournalQuery {
                after_seq: after,
                limit: Some(PAGE),
                ..JournalQuery::default()
            })
            .await
            .map_err(|e| (after, e))?;
        for row in &page {
            each(row);
        }
        count += page.len() as u64;
        match page.last() {
            Some(last) if page.len() as u64 == PAGE => after = Some(last.seq),
            _ => return Ok(count),
        }
    }
}

fn row_json(row: &JournalRow, revocation: Option<&Revocation>) -> serde_json::Value {
    serde_json::json!({
        "seq": row.seq,
        "serial": row.record.serial,
        "spiffe_id": row.record.spiffe_id,
        "caller": row.record.caller,
        "authority": row.record.authority,
        "not_before": rfc3339(row.record.not_before),
        "not_after": rfc3339(row.record.not_after),
        "issued_at": rfc3339(row.issued_at),
        "der_sha256": hex(&row.record.der_sha256),
        "prev_hash": hex(&row.prev_hash),
        "row_hash": hex(&row.row_hash),
        "revoked": revocation.is_some(),
        "revoked_at": revocation.map(|r| rfc3339(r.revoked_at)),
        "revocation_reason": revocation.map(|r| r.reason.clone()),
    })
}

impl AuditCommand {
    pub(super) async fn run(self) -> Result<(), String> {
        match self {
            AuditCommand::List {
                store,
                spiffe_id,
                limit,
            } => {
                let query = JournalQuery {
                    spiffe_id,
                    limit: Some(limit),
                    ..JournalQuery::default()
                };
                let rows = store
                    .open()
                    .await?
                    .journal(query)
                    .await
                    .map_err(|e| e.to_string())?;
                for row in rows {
                    println!(
                        "{}\t{}\t{}\t{}\tuntil {}\t{}",
                        row.seq,
                        rfc3339(row.issued_at),
                        row.record.serial,
                        row.record.spiffe_id,
                        rfc3339(row.record.not_after),
                        row.record.caller
                    );
                }
            }
            AuditCommand::Verify(args) => verify::run(args).await?,
            AuditCommand::Export {
                store,
                format: ExportFormat::Jsonl,
            } => {
                let store = store.open().await?;
                let revocations: HashMap<String, Revocation> = store
                    .revocations(SystemTime::UNIX_EPOCH)
                    .await
                    .map_err(|e| format!("cannot read the revocations: {e}"))?
                    .into_iter()
                    .map(|r| (r.serial.clone(), r))
                    .collect();
                let mut out = std::io::stdout().lock();
                let mut written = Ok(());
                each_row(&store, |row| {
                    if written.is_ok() {
                        let line = row_json(row, revocations.get(&row.record.serial));
                        written = writeln!(out, "{line}");
                    }
                })
                .await
                .map_err(|(after, e)| read_error(after, &e))?;
                written.map_err(|e| format!("cannot write the export: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A journal read that failed after row `after`.
fn read_error(after: Option<i64>, error: &StoreError) -> String {
    match after {
        Some(seq) => format!("cannot read the journal after seq {seq}: {error}"),
        None => format!("cannot read the journal: {error}"),
    }
}

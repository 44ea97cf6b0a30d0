//! `halyard-ca audit`: the issuance journal, read from the store itself (no running CA needed).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::authority::rfc3339;
use crate::store::{JournalQuery, JournalRow, Store, StoreOptions};

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
    /// Check the journal's hash chain; exit 1 if any row was changed or deleted.
    Verify {
        #[command(flatten)]
        store: StoreTarget,
    },
    /// Export the whole journal.
    Export {
        #[command(flatten)]
        store: StoreTarget,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn row_json(row: &JournalRow) -> serde_json::Value {
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
            AuditCommand::Verify { store } => {
                let report = store
                    .open()
                    .await?
                    .verify_journal()
                    .await
                    .map_err(|e| e.to_string())?;
                if report.is_intact() {
                    println!("journal intact: {} rows checked", report.rows_checked);
                } else {
                    for problem in &report.problems {
                        println!("seq {}: {:?}", problem.seq, problem.kind);
                    }
                    return Err(format!(
                        "journal tampered: {} problem(s) in {} rows",
                        report.problems.len(),
                        report.rows_checked
                    ));
                }
            }
            AuditCommand::Export {
                store,
                format: ExportFormat::Jsonl,
            } => {
                let rows = store
                    .open()
                    .await?
                    .journal(JournalQuery::default())
                    .await
                    .map_err(|e| e.to_string())?;
                for row in &rows {
                    println!("{}", row_json(row));
                }
            }
        }
        Ok(())
    }
}

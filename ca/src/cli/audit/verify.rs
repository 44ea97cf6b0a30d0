//! `audit verify`: three checks, each printing one line per problem and then one summary line;
//! the command fails (exit 1) when any check found a problem.
//!
//! 1. `journal`: the hash chain ([`Store::verify_journal`]).
//! 2. `chains`: every row's authority is in the store and chains to a root of the bundle, and the
//!    row's validity lies inside the authority's ([`super::chains`]).
//! 3. `crls`: every unexpired revocation is in the current CRL of its authority, each CRL signed
//!    by that authority and current ([`super::crls`]). Only with `--crl-url` or `--crl`; without
//!    them the summary says the check was not made.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::chains::{self, CheckedAuthority};
use super::crls::{self, CrlSource};
use super::fetch::CrlFetcher;
use super::{VerifyArgs, each_row, read_error};
use crate::authority::certs_from_pem;
use crate::store::{JournalProblemKind, Store};

/// Runs every check; `Err` names the checks that failed.
pub(super) async fn run(args: VerifyArgs) -> Result<(), String> {
    let now = SystemTime::now();
    // Files first, so that a bad flag fails before anything is printed.
    let bundle_path = bundle_path(&args)?;
    let roots = read_bundle(&bundle_path)?;
    let mut files = Vec::new();
    for path in &args.crls {
        files.extend(crls::read_crl_file(path)?);
    }
    let store = args.store.open().await?;
    let mut failed = Vec::new();

    if let Some(failure) = journal(&store).await? {
        failed.push(failure);
    }
    let authorities = match store.authorities().await {
        Ok(records) => records
            .iter()
            .map(|r| (r.id.clone(), chains::check_authority(r, &roots)))
            .collect(),
        Err(e) => {
            println!("chains: cannot read the authorities: {e}");
            HashMap::new()
        }
    };
    if let Some(failure) = chain_check(&store, &authorities, &bundle_path, roots.len()).await {
        failed.push(failure);
    }
    let crl_failure = if args.crl_url.is_none() && files.is_empty() {
        println!(
            "crls NOT CHECKED: give --crl-url BASE or --crl FILE to check that every revoked \
             serial is in its authority's current CRL"
        );
        None
    } else {
        let fetcher = args.crl_url.map(CrlFetcher::new);
        crl_check(&store, &authorities, fetcher, files, now).await
    };
    failed.extend(crl_failure);

    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("audit verify failed: {}", failed.join("; ")))
    }
}

fn bundle_path(args: &VerifyArgs) -> Result<PathBuf, String> {
    match (&args.bundle, &args.store.data_dir) {
        (Some(path), _) => Ok(path.clone()),
        (None, Some(dir)) => Ok(dir.join("bundle.pem")),
        (None, None) => Err(
            "give --bundle FILE: with --store-url there is no data directory to read bundle.pem \
             from, and the authorities must be checked against the roots you trust"
                .to_owned(),
        ),
    }
}

fn read_bundle(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the bundle {}: {e}", path.display()))?;
    certs_from_pem(&pem).map_err(|e| format!("the bundle {}: {e}", path.display()))
}

/// Check 1. `Err` only when the store cannot be read at all.
async fn journal(store: &Store) -> Result<Option<String>, String> {
    let report = store
        .verify_journal()
        .await
        .map_err(|e| format!("cannot verify the journal: {e}"))?;
    if report.is_intact() {
        println!("journal intact: {} rows checked", report.rows_checked);
        return Ok(None);
    }
    for problem in &report.problems {
        println!("journal: seq {}: {}", problem.seq, describe(&problem.kind));
    }
    println!(
        "journal TAMPERED: {} problem(s) in {} rows",
        report.problems.len(),
        report.rows_checked
    );
    Ok(Some(format!(
        "journal tampered ({} problem(s))",
        report.problems.len()
    )))
}

fn describe(kind: &JournalProblemKind) -> String {
    match kind {
        JournalProblemKind::HashMismatch => {
            "its stored hash is not the hash of its contents: the row was changed".to_owned()
        }
        JournalProblemKind::BrokenLink => {
            "its prev_hash is not the previous row's hash: the previous row was replaced".to_owned()
        }
        JournalProblemKind::Gap { expected_seq } => {
            format!("rows are missing before it (seq {expected_seq} was expected here)")
        }
        JournalProblemKind::Truncated { head_seq } => {
            format!("rows from here to seq {head_seq} (the recorded head) are missing")
        }
        JournalProblemKind::HeadMismatch => {
            "the last row is not the head the store recorded: rows were added or the head \
             rewritten outside the store"
                .to_owned()
        }
    }
}

/// Check 2.
async fn chain_check(
    store: &Store,
    authorities: &HashMap<String, CheckedAuthority>,
    bundle: &Path,
    roots: usize,
) -> Option<String> {
    let mut problems = 0u64;
    let mut named = BTreeSet::new();
    let walked = each_row(store, |row| {
        named.insert(row.record.authority.clone());
        if let Some(problem) = chains::check_row(row, authorities) {
            problems += 1;
            println!(
                "chains: seq {} serial {}: {problem}",
                row.seq, row.record.serial
            );
        }
    })
    .await;
    let rows = match walked {
        Ok(rows) => rows,
        Err((after, e)) => {
            println!("chains: {}", read_error(after, &e));
            problems += 1;
            0
        }
    };
    let mut ids: Vec<&String> = authorities.keys().collect();
    ids.sort();
    for id in ids.into_iter().filter(|id| !named.contains(*id)) {
        if let Err(reason) = &authorities[id].verdict {
            println!("chains: note: authority {id} {reason} (no journal row names it)");
        }
    }
    let bundle = bundle.display();
    if problems == 0 {
        println!(
            "chains ok: {rows} rows, each inside the validity of its authority ({} in the \
             store), which chains to one of the {roots} root(s) of {bundle}",
            authorities.len()
        );
        None
    } else {
        println!(
            "chains FAILED: {problems} problem(s) in {rows} rows checked against the {roots} \
             root(s) of {bundle}"
        );
        Some(format!("chains ({problems} problem(s))"))
    }
}

/// Check 3.
async fn crl_check(
    store: &Store,
    authorities: &HashMap<String, CheckedAuthority>,
    fetcher: Option<CrlFetcher>,
    mut sources: Vec<CrlSource>,
    now: SystemTime,
) -> Option<String> {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // Read before the CRLs are fetched: a revocation made meanwhile cannot look missing.
    let revoked = match store.revocations(now).await {
        Ok(revoked) => revoked,
        Err(e) => {
            println!("crls: cannot read the revocations: {e}");
            println!("crls FAILED");
            return Some("crls (the store's revocations cannot be read)".to_owned());
        }
    };
    if let Some(fetcher) = &fetcher {
        let with_revocations: BTreeSet<String> =
            revoked.iter().map(|r| r.authority.clone()).collect();
        // Every unexpired authority's CRL, to check its signature and currency too.
        let mut ids = with_revocations.clone();
        match store.authorities().await {
            Ok(records) => ids.extend(
                records
                    .into_iter()
                    .filter(|r| r.not_after > now)
                    .map(|r| r.id),
            ),
            Err(e) => problems.push(format!("cannot read the authorities: {e}")),
        }
        for id in &ids {
            match fetcher.fetch(id).await {
                Ok(Some(der)) => sources.push(CrlSource {
                    name: fetcher.url(id),
                    authority: Some(id.clone()),
                    der,
                }),
                Ok(None) if with_revocations.contains(id) => problems.push(format!(
                    "authority {id}: no CRL at {} (404), yet it has unexpired revocations",
                    fetcher.url(id)
                )),
                Ok(None) => notes.push(format!(
                    "authority {id}: no CRL at {} (404); it has no unexpired revocation",
                    fetcher.url(id)
                )),
                Err(e) => problems.push(e),
            }
        }
    }
    // Read after the CRLs: a serial a CRL lists must have a revocation behind it.
    let ever_revoked: BTreeSet<String> = match store.revocations(SystemTime::UNIX_EPOCH).await {
        Ok(all) => all.iter().map(|r| crls::bare_serial(&r.serial)).collect(),
        Err(e) => {
            problems.push(format!("cannot read the revocations: {e}"));
            BTreeSet::new()
        }
    };
    let report = crls::check(&sources, authorities, &revoked, &ever_revoked, now);
    problems.extend(report.problems);
    for note in &notes {
        println!("crls: note: {note}");
    }
    for problem in &problems {
        println!("crls: {problem}");
    }
    if problems.is_empty() {
        println!(
            "crls ok: {} unexpired revocation(s), each in the current CRL of its authority; {} \
             CRL(s) read, each signed by its authority and current",
            report.revocations, report.crls
        );
        None
    } else {
        println!(
            "crls FAILED: {} problem(s); {} unexpired revocation(s), {} CRL(s) read",
            problems.len(),
            report.revocations,
            report.crls
        );
        Some(format!("crls ({} problem(s))", problems.len()))
    }
}

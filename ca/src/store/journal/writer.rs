//! Group commit: one background task takes every row waiting in a bounded queue (up to
//! `max_batch`), appends them to the chain in one transaction, and answers each caller only after
//! `COMMIT`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::any::AnyArguments;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::chain::{self, ChainInput};
use super::head;
use super::{IssuedRecord, JournalRow, JournalStats};
use crate::store::codec;
use crate::store::error::is_unique_violation;
use crate::store::{Backend, StoreError, StoreOptions};

/// The most rows one `INSERT` statement carries (11 parameters each: far below both engines'
/// limits). PostgreSQL gains from every round trip saved; on SQLite each statement is a hop to
/// sqlx's worker thread, but binding slows down with a statement's parameter count.
fn max_chunk(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 32,
        Backend::Postgres => 256,
    }
}

/// How `rows` rows are split into statements: full chunks of `max`, then the rest in powers of
/// two. There are then at most log2(`max`) + 1 statement texts, so each stays prepared on its
/// connection (re-preparing a 32-row statement cost SQLite more than executing it).
pub(super) fn chunk_sizes(mut rows: usize, max: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if rows == 0 {
            return None;
        }
        let size = if rows >= max { max } else { 1 << rows.ilog2() };
        rows -= size;
        Some(size)
    })
}

/// The columns an append writes, in the order [`bind_rows`] binds them.
const JOURNAL_COLUMNS: &str = "seq, serial, spiffe_id, caller, authority, not_before, not_after, \
                               der_sha256, issued_at, prev_hash, row_hash";
/// How many: each row takes this many parameters.
const COLUMNS: usize = 11;

/// `INSERT` of `rows` journal rows. SQLite gets anonymous `?` placeholders: it resolves each
/// `$n` by name, by a linear search, so binding 352 of them cost quadratic time.
///
/// On SQLite the statement is `INSERT OR ROLLBACK`: a multi-row `INSERT` that may abort half way
/// makes SQLite keep a statement journal of every page it touches, spilled to a temporary file
/// past 64 KiB (a fifth of the journal's CPU time in a profile). A failed batch is rolled back
/// whole anyway, so rolling back the transaction at the conflict loses nothing.
pub(super) fn insert_sql(backend: Backend, rows: usize) -> String {
    let verb = match backend {
        Backend::Sqlite => "INSERT OR ROLLBACK",
        Backend::Postgres => "INSERT",
    };
    format!(
        "{verb} INTO journal ({JOURNAL_COLUMNS}) VALUES {}",
        row_values(backend, rows, 1)
    )
}

/// `(…), (…)`: the placeholders of `rows` rows of [`COLUMNS`] parameters. SQLite's are `?`;
/// PostgreSQL's are numbered from `$first`.
fn row_values(backend: Backend, rows: usize, first: usize) -> String {
    let mut values = String::new();
    for row in 0..rows {
        values.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..COLUMNS {
            if column > 0 {
                values.push_str(", ");
            }
            match backend {
                Backend::Sqlite => values.push('?'),
                Backend::Postgres => {
                    values.push('$');
                    values.push_str(&(first + row * COLUMNS + column).to_string());
                }
            }
        }
        values.push(')');
    }
    values
}

/// The most rows a batch appends in one statement ([`one_statement_sql`]) after a head the writer
/// already knows; bigger batches take a transaction of several statements.
const ONE_STATEMENT: usize = 32;

/// A whole append of `rows` rows after the head the writer already knows, in one call: the round
/// trips of a separate `BEGIN`, head `SELECT`, head `UPDATE` and `COMMIT` were most of a small
/// commit's cost.
///
/// - SQLite: one text of four statements, which sqlx runs in one call to its worker thread,
///   binding the `?` parameters across them in order: the rows', then the new head's. If another
///   writer appended since, the first `seq` is taken: `INSERT OR ROLLBACK` ends the transaction
///   there and the statements after it do not run.
/// - PostgreSQL: one statement, so one transaction. It locks the head row only if it is still
///   the head the writer knows (`$1`, `$2`), appends the rows (from `$5`) and moves the head to
///   `$3`, `$4`. If another replica appended since, it changes nothing and returns no row.
///
/// Either way the head's `UPDATE` returns the head, so the writer sees that it moved.
pub(super) fn one_statement_sql(backend: Backend, rows: usize) -> String {
    match backend {
        Backend::Sqlite => format!(
            "BEGIN IMMEDIATE; {}; UPDATE journal_head SET head_seq = ?, head_hash = ? \
             WHERE id = 1 RETURNING head_seq; COMMIT",
            insert_sql(backend, rows)
        ),
        Backend::Postgres => format!(
            "WITH head AS (SELECT id FROM journal_head \
             WHERE id = 1 AND head_seq = $1 AND head_hash = $2 FOR UPDATE), \
             appended AS (INSERT INTO journal ({JOURNAL_COLUMNS}) \
             SELECT * FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM head)) \
             UPDATE journal_head SET head_seq = $3, head_hash = $4 \
             WHERE id = 1 AND EXISTS (SELECT 1 FROM head) RETURNING head_seq",
            row_values(backend, rows, 5)
        ),
    }
}

/// A record checked and converted to what is stored, before it is queued: nothing about one
/// caller's row can fail another caller's batch.
pub(in crate::store) struct Validated {
    /// The record with its times truncated to what is stored.
    record: IssuedRecord,
    not_before: i64,
    not_after: i64,
}

impl Validated {
    pub(in crate::store) fn new(mut record: IssuedRecord) -> Result<Self, StoreError> {
        if !codec::is_lower_hex(&record.serial) {
            return Err(StoreError::invalid(
                "serial",
                format!("{:?} is not lowercase hex", record.serial),
            ));
        }
        for (field, value) in [
            ("spiffe_id", &record.spiffe_id),
            ("caller", &record.caller),
            ("authority", &record.authority),
        ] {
            if value.is_empty() {
                return Err(StoreError::invalid(field, "empty"));
            }
        }
        let not_before = codec::to_unix(record.not_before, "not_before")?;
        let not_after = codec::to_unix(record.not_after, "not_after")?;
        if not_after < not_before {
            return Err(StoreError::invalid("not_after", "before not_before"));
        }
        record.not_before = codec::from_unix(not_before)?;
        record.not_after = codec::from_unix(not_after)?;
        Ok(Self {
            record,
            not_before,
            not_after,
        })
    }
}

struct Pending {
    record: Validated,
    reply: oneshot::Sender<Result<JournalRow, StoreError>>,
}

/// The callers' side of the writer. Dropping it (with the last `Store`) stops the writer once the
/// queue is empty.
pub(in crate::store) struct WriterHandle {
    queue: mpsc::Sender<Pending>,
    stats: Arc<Stats>,
}

impl WriterHandle {
    /// Starts the writer task on the current Tokio runtime.
    pub(in crate::store) fn start(pool: AnyPool, backend: Backend, options: StoreOptions) -> Self {
        let (queue, requests) = mpsc::channel(options.queue_depth);
        let stats = Arc::new(Stats::default());
        let max = max_chunk(backend);
        debug_assert!(max.is_power_of_two());
        let writer = Writer {
            pool,
            backend,
            // Every chunk size is a power of two: statement i carries 2^i rows.
            statements: (0..=max.ilog2())
                .map(|i| insert_sql(backend, 1 << i))
                .collect(),
            one_statement: (1..=ONE_STATEMENT)
                .map(|rows| one_statement_sql(backend, rows))
                .collect(),
            tip: None,
            max_batch: options.max_batch,
            stats: Arc::clone(&stats),
        };
        let span = tracing::info_span!("journal_writer", ?backend);
        tokio::spawn(writer.run(requests).instrument(span));
        Self { queue, stats }
    }

    /// Queues `record` and waits for its committed row.
    pub(in crate::store) async fn submit(
        &self,
        record: Validated,
    ) -> Result<JournalRow, StoreError> {
        let (reply, committed) = oneshot::channel();
        self.queue
            .send(Pending { record, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        committed.await.map_err(|_| StoreError::WriterStopped)?
    }

    pub(in crate::store) fn stats(&self) -> JournalStats {
        self.stats.snapshot()
    }
}

#[derive(Default)]
struct Stats {
    batches_committed: AtomicU64,
    rows_committed: AtomicU64,
    batches_failed: AtomicU64,
    last_batch_size: AtomicU64,
    last_commit_nanos: AtomicU64,
    commit_nanos: AtomicU64,
}

impl Stats {
    fn committed(&self, rows: usize, took: Duration) {
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.rows_committed.fetch_add(rows, Ordering::Relaxed);
        self.last_batch_size.store(rows, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_commit_nanos.store(nanos, Ordering::Relaxed);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> JournalStats {
        JournalStats {
            batches_committed: self.batches_committed.load(Ordering::Relaxed),
            rows_committed: self.rows_committed.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            last_batch_size: self.last_batch_size.load(Ordering::Relaxed),
            last_commit_duration: Duration::from_nanos(
                self.last_commit_nanos.load(Ordering::Relaxed),
            ),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// How many times the writer yields, at most, to let more requests join a batch.
const MAX_YIELDS: usize = 4;

/// The last row this writer appended: where its next append goes, unless another writer
/// appended since.
#[derive(Clone, Copy)]
struct Tip {
    seq: i64,
    hash: [u8; 32],
}

struct Writer {
    pool: AnyPool,
    backend: Backend,
    /// The `INSERT` for each chunk size of [`chunk_sizes`], by log2 of its row count.
    statements: Vec<String>,
    /// [`one_statement_sql`] for 1 to [`ONE_STATEMENT`] rows (index: rows - 1).
    one_statement: Vec<String>,
    /// The head as of this writer's last commit, so the next one need not read it first.
    tip: Option<Tip>,
    max_batch: usize,
    stats: Arc<Stats>,
}

impl Writer {
    fn statement(&self, rows: usize) -> &str {
        &self.statements[rows.ilog2() as usize]
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut failing = false;
        // The writer keeps one connection: its page cache stays warm (on SQLite, a connection
        // that another one wrote behind must drop its cache and re-read the pages it touches).
        let mut conn = None;
        // Ends when every `WriterHandle` is gone and the queue is drained.
        while requests.recv_many(&mut batch, self.max_batch).await > 0 {
            // Let every request that is ready to be journaled get here first: a busy CA then
            // commits fewer, bigger batches (each commit's fsync and WAL pages cost the same
            // whatever its size), and an idle one loses only a yield. Requests keep arriving
            // while others are signed, so the writer yields again while each yield brought more,
            // a few times at most.
            for _ in 0..MAX_YIELDS {
                if batch.len() >= self.max_batch {
                    break;
                }
                let before = batch.len();
                tokio::task::yield_now().await;
                while batch.len() < self.max_batch {
                    match requests.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                if batch.len() == before {
                    break;
                }
            }
            // A caller that stopped waiting will never hand out its certificate: no row for it.
            batch.retain(|pending: &Pending| !pending.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            match self.commit(&mut conn, &batch).await {
                Ok(rows) => {
                    self.stats.committed(rows.len(), started.elapsed());
                    failing = false;
                    for (pending, row) in batch.drain(..).zip(rows) {
                        // The caller may have stopped waiting meanwhile; the row stands.
                        let _ = pending.reply.send(Ok(row));
                    }
                }
                Err(error) => {
                    self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        tracing::debug!(%error, rows = batch.len(), "journal batch failed again");
                    } else {
                        tracing::warn!(%error, rows = batch.len(), "journal batch failed");
                    }
                    failing = true;
                    for pending in batch.drain(..) {
                        let _ = pending.reply.send(Err(error.clone()));
                    }
                }
            }
        }
        drop(conn);
        self.pool.close().await;
        tracing::debug!("journal writer stopped");
    }

    /// Appends `batch` on the writer's connection (taken from the pool when it has none); the
    /// rows as committed.
    async fn commit(
        &mut self,
        conn: &mut Option<PoolConnection<Any>>,
        batch: &[Pending],
    ) -> Result<Vec<JournalRow>, StoreError> {
        let tip = self.tip.take();
        let mut appended = self.attempt(conn, batch, tip).await;
        if matches!(appended, Ok(None)) {
            // Another writer on this database (a replica, an offline `sign`) appended since this
            // one's last commit: append after the head it reads under the lock.
            tracing::debug!("the journal head moved under this writer; reading it again");
            appended = self.attempt(conn, batch, None).await;
        }
        let rows = appended?.ok_or_else(|| {
            StoreError::Corrupt("the journal head moved while the writer held its lock".into())
        })?;
        self.tip = rows.last().map(|row| Tip {
            seq: row.seq,
            hash: row.row_hash,
        });
        Ok(rows)
    }

    /// One try at appending `batch` after `tip`, or after the head read under the lock: the
    /// rows, or `None` if another writer appended after `tip`.
    async fn attempt(
        &self,
        conn: &mut Option<PoolConnection<Any>>,
        batch: &[Pending],
        tip: Option<Tip>,
    ) -> Result<Option<Vec<JournalRow>>, StoreError> {
        let held = match conn {
            Some(held) => held,
            None => conn.insert(self.pool.acquire().await?),
        };
        let result = match tip {
            Some(tip) if batch.len() <= self.one_statement.len() => {
                self.append_in_one_statement(held, batch, tip).await
            }
            // PostgreSQL's transaction always reads the head under its row lock.
            Some(tip) if self.backend == Backend::Sqlite => {
                match self.append_in_transaction(held, batch, Some(tip)).await {
                    Err(StoreError::Database(error)) if is_unique_violation(&error) => Ok(None),
                    other => other.map(Some),
                }
            }
            _ => self
                .append_in_transaction(held, batch, None)
                .await
                .map(Some),
        };
        // A failed append (a full disk, a lost server, a taken seq) can leave the connection
        // inside its transaction; it must not serve the next batch. (PostgreSQL's one statement
        // that found the head moved was a transaction of its own, and is over.)
        let spent = match &result {
            Err(_) => true,
            Ok(None) => self.backend == Backend::Sqlite,
            Ok(Some(_)) => false,
        };
        if spent && let Some(mut failed) = conn.take() {
            failed.close_on_drop();
        }
        result
    }

    /// After a known head, at most [`ONE_STATEMENT`] rows: one call ([`one_statement_sql`]).
    async fn append_in_one_statement(
        &self,
        conn: &mut AnyConnection,
        batch: &[Pending],
        tip: Tip,
    ) -> Result<Option<Vec<JournalRow>>, StoreError> {
        let issued_at = codec::now_unix()?;
        let rows = chain_rows(batch, tip, issued_at)?;
        let Some(last) = rows.last() else {
            return Ok(Some(rows));
        };
        let sql = sqlx::query(AssertSqlSafe(self.one_statement[rows.len() - 1].as_str()));
        let query = match self.backend {
            Backend::Sqlite => bind_rows(sql, &rows, batch, issued_at)
                .bind(last.seq)
                .bind(codec::hex(&last.row_hash)),
            Backend::Postgres => bind_rows(
                sql.bind(tip.seq)
                    .bind(codec::hex(&tip.hash))
                    .bind(last.seq)
                    .bind(codec::hex(&last.row_hash)),
                &rows,
                batch,
                issued_at,
            ),
        };
        let head = match query.fetch_all(conn).await {
            Ok(head) => head,
            Err(error) if self.backend == Backend::Sqlite && is_unique_violation(&error) => {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        match (head.len(), self.backend) {
            (1, _) => Ok(Some(rows)),
            (0, Backend::Postgres) => Ok(None),
            // Only if someone deleted the head row: on SQLite the rows are in, the head did
            // not move.
            _ => Err(StoreError::Corrupt(
                "the journal_head row is missing".into(),
            )),
        }
    }

    /// Appends `batch` in a transaction of several statements: after `tip` (SQLite only), or after
    /// the head it reads under the write lock (on every engine that lock keeps other appenders
    /// out).
    async fn append_in_transaction(
        &self,
        conn: &mut AnyConnection,
        batch: &[Pending],
        tip: Option<Tip>,
    ) -> Result<Vec<JournalRow>, StoreError> {
        let issued_at = codec::now_unix()?;
        let mut tx = head::begin_append(conn, self.backend).await?;
        let tip = match tip {
            Some(tip) => tip,
            None => {
                let head = head::read(&mut tx, head::Lock::ForAppend(self.backend)).await?;
                Tip {
                    seq: head.head_seq,
                    hash: codec::parse_hash(&head.head_hash, "journal_head.head_hash")?,
                }
            }
        };
        let rows = chain_rows(batch, tip, issued_at)?;
        let mut start = 0;
        for size in chunk_sizes(rows.len(), max_chunk(self.backend)) {
            let end = start + size;
            let sql = self.statement(size);
            bind_rows(
                sqlx::query(AssertSqlSafe(sql)),
                &rows[start..end],
                &batch[start..end],
                issued_at,
            )
            .execute(&mut *tx)
            .await?;
            start = end;
        }
        if let Some(last) = rows.last() {
            head::set_head(&mut tx, last.seq, codec::hex(&last.row_hash)).await?;
        }
        tx.commit().await?;
        Ok(rows)
    }
}

/// The rows `batch` becomes after `tip`, hashes chained, all issued at `issued_at`.
fn chain_rows(batch: &[Pending], tip: Tip, issued_at: i64) -> Result<Vec<JournalRow>, StoreError> {
    let issued_at_time = codec::from_unix(issued_at)?;
    let mut seq = tip.seq;
    let mut prev_hash = tip.hash;
    let mut rows = Vec::with_capacity(batch.len());
    for pending in batch {
        let validated = &pending.record;
        let record = &validated.record;
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("journal seq overflows i64".into()))?;
        let row_hash = chain::row_hash(
            &prev_hash,
            &ChainInput {
                seq,
                serial: &record.serial,
                spiffe_id: &record.spiffe_id,
                caller: &record.caller,
                authority: &record.authority,
                not_before: validated.not_before,
                not_after: validated.not_after,
                der_sha256: &record.der_sha256,
                issued_at,
            },
        );
        rows.push(JournalRow {
            seq,
            record: record.clone(),
            issued_at: issued_at_time,
            prev_hash,
            row_hash,
        });
        prev_hash = row_hash;
    }
    Ok(rows)
}

/// `query` with the eleven `INSERT` parameters of each of `rows` bound, in order.
fn bind_rows<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    rows: &'q [JournalRow],
    pending: &[Pending],
    issued_at: i64,
) -> Query<'q, Any, AnyArguments> {
    for (row, pending) in rows.iter().zip(pending) {
        let record = &row.record;
        query = query
            .bind(row.seq)
            .bind(record.serial.as_str())
            .bind(record.spiffe_id.as_str())
            .bind(record.caller.as_str())
            .bind(record.authority.as_str())
            .bind(pending.record.not_before)
            .bind(pending.record.not_after)
            .bind(codec::hex(&record.der_sha256))
            .bind(issued_at)
            .bind(codec::hex(&row.prev_hash))
            .bind(codec::hex(&row.row_hash));
    }
    query
}

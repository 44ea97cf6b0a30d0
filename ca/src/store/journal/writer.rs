//! Group commit: one background task takes every row waiting in a bounded queue (up to
//! `max_batch`), appends them to the chain in one transaction, and answers each caller only after
//! `COMMIT`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::chain::{self, ChainInput};
use super::head;
use super::{IssuedRecord, JournalRow, JournalStats};
use crate::store::codec::{self, Bind, Sql};
use crate::store::{Backend, StoreError, StoreOptions};

/// Rows per `INSERT` statement (11 parameters each: far below both engines' limits). Measured:
/// PostgreSQL gains from every round trip saved, while sqlx's SQLite binding slows down faster
/// than linearly with a statement's parameter count (256 rows: ~3x slower than 32).
fn insert_chunk(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 32,
        Backend::Postgres => 256,
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
        let writer = Writer {
            pool,
            backend,
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
}

impl Stats {
    fn committed(&self, rows: usize, took: Duration) {
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.rows_committed.fetch_add(rows, Ordering::Relaxed);
        self.last_batch_size.store(rows, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_commit_nanos.store(nanos, Ordering::Relaxed);
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
        }
    }
}

struct Writer {
    pool: AnyPool,
    backend: Backend,
    max_batch: usize,
    stats: Arc<Stats>,
}

impl Writer {
    async fn run(self, mut requests: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut failing = false;
        // Ends when every `WriterHandle` is gone and the queue is drained.
        while requests.recv_many(&mut batch, self.max_batch).await > 0 {
            // A caller that stopped waiting will never hand out its certificate: no row for it.
            batch.retain(|pending: &Pending| !pending.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            match self.commit(&batch).await {
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
        self.pool.close().await;
        tracing::debug!("journal writer stopped");
    }

    /// Appends `batch` after the current head in one transaction; the rows as committed.
    async fn commit(&self, batch: &[Pending]) -> Result<Vec<JournalRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = self.commit_on(&mut conn, batch).await;
        if result.is_err() {
            // A failed append (a full disk, a lost server) can leave the connection inside its
            // transaction; it must not serve the next batch.
            conn.close_on_drop();
        }
        result
    }

    async fn commit_on(
        &self,
        conn: &mut AnyConnection,
        batch: &[Pending],
    ) -> Result<Vec<JournalRow>, StoreError> {
        let issued_at = codec::now_unix()?;
        let issued_at_time = codec::from_unix(issued_at)?;
        let mut tx = head::begin_append(conn, self.backend).await?;
        let head = head::read(&mut tx, head::Lock::ForAppend(self.backend)).await?;
        let mut seq = head.head_seq;
        let mut prev_hash = codec::parse_hash(&head.head_hash, "journal_head.head_hash")?;

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

        let size = insert_chunk(self.backend);
        for (rows, batch) in rows.chunks(size).zip(batch.chunks(size)) {
            insert(&mut tx, rows, batch, issued_at).await?;
        }
        head::set_head(&mut tx, seq, codec::hex(&prev_hash)).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

async fn insert(
    tx: &mut Transaction<'_, Any>,
    rows: &[JournalRow],
    pending: &[Pending],
    issued_at: i64,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(
        "INSERT INTO journal (seq, serial, spiffe_id, caller, authority, not_before, not_after, \
         der_sha256, issued_at, prev_hash, row_hash) VALUES ",
    );
    for (index, (row, pending)) in rows.iter().zip(pending).enumerate() {
        let record = &row.record;
        sql.push(if index == 0 { "(" } else { ", (" });
        let values = [
            Bind::Int(row.seq),
            Bind::Text(record.serial.clone()),
            Bind::Text(record.spiffe_id.clone()),
            Bind::Text(record.caller.clone()),
            Bind::Text(record.authority.clone()),
            Bind::Int(pending.record.not_before),
            Bind::Int(pending.record.not_after),
            Bind::Text(codec::hex(&record.der_sha256)),
            Bind::Int(issued_at),
            Bind::Text(codec::hex(&row.prev_hash)),
            Bind::Text(codec::hex(&row.row_hash)),
        ];
        for (position, value) in values.into_iter().enumerate() {
            if position > 0 {
                sql.push(", ");
            }
            sql.bind(value);
        }
        sql.push(")");
    }
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

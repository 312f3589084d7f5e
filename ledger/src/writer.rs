//! The [`Ledger`] handle and its writer task.
//!
//! `record()` never waits: it puts the record on a bounded queue, or, when
//! the queue is full (or the ledger shut down), appends it to the spool.
//! One writer task owns the database side: it takes records off the queue
//! in batches (`batch_size`, or whatever arrived within `flush_interval`),
//! writes each batch in one transaction as the next links of this node's
//! hash chain, and spools the batch (fsync'd) when the write fails or takes
//! longer than `write_timeout`. A down database is retried every
//! `retry_interval`; once a write succeeds again the spool is replayed,
//! oldest first, before new batches.
//!
//! [`Ledger::record_durable`] is the strict path: the record goes on a
//! queue of its own, the writer commits it (with whatever else is waiting:
//! a group commit) at once instead of after `flush_interval`, and the
//! returned [`DurableAck`] resolves once it is in the database or fsync'd
//! in the spool.
//!
//! What can be lost: records in the in-memory queue if the process is
//! killed without [`Ledger::shutdown`] (SIGKILL, OOM, power loss), overflow
//! records appended but not yet fsync'd at a power loss (the writer syncs
//! them every `retry_interval`), and records that meet a failed disk with the
//! database down (`records_lost` counts those).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::counters::{LedgerCounters, LedgerStats};
use crate::record::UsageRecord;
use crate::settings::LedgerSettings;
use crate::spool::{PendingRecord, Spool};
use crate::store::append::ChainTip;
use crate::store::{Store, StoreOptions};
use crate::LedgerError;

/// How long the writer naps between looks at the queue while a batch fills.
const FILL_NAP: std::time::Duration = std::time::Duration::from_millis(5);

/// Where [`Ledger::record`] put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// On the in-memory queue, for the next batch.
    Queued,
    /// In the spool on disk (queue full, or ledger shut down); replayed later.
    Spooled,
}

/// Resolves once a record handed to [`Ledger::record_durable`] is durable.
#[derive(Debug)]
pub struct DurableAck(DurableState);

#[derive(Debug)]
enum DurableState {
    Done(bool),
    Waiting(oneshot::Receiver<bool>),
}

impl DurableAck {
    /// `true` once the record is committed to the database or fsync'd in
    /// the spool; `false` when neither could take it (it is held in memory
    /// and retried, but a crash now would lose it).
    pub async fn durable(self) -> bool {
        match self.0 {
            DurableState::Done(ok) => ok,
            DurableState::Waiting(rx) => rx.await.unwrap_or(false),
        }
    }
}

/// A record on the strict queue, with whom to tell once it is durable.
#[derive(Debug)]
struct DurableRecord {
    pending: PendingRecord,
    done: oneshot::Sender<bool>,
}

/// The state after [`Ledger::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Records still waiting in the spool (0 once the database took everything).
    pub spool_pending_records: u64,
    /// Whether the database accepted the last write.
    pub database_up: bool,
}

/// A cloneable handle to the usage ledger. Start one per process with
/// [`Ledger::start`], hand clones to request handlers, call
/// [`Ledger::shutdown`] on SIGTERM.
#[derive(Debug, Clone)]
pub struct Ledger {
    queue: mpsc::Sender<PendingRecord>,
    durable: mpsc::Sender<DurableRecord>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node_id: String,
    counters: Arc<LedgerCounters>,
    spool: Arc<Spool>,
    flush_requests: mpsc::Sender<oneshot::Sender<FlushReport>>,
    shutdown: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
    /// Set by `shutdown()`: records go straight to the spool, fsync'd.
    closed: AtomicBool,
}

impl Ledger {
    /// Validates `settings`, opens the spool directory (an error here is
    /// fatal: without it no record is safe), connects to the database and
    /// spawns the writer task on the current tokio runtime.
    ///
    /// An unreachable database is *not* an error: the ledger starts
    /// spooling and keeps retrying, so a database outage never stops the
    /// gateway. Use [`Store::open`] first to fail fast on a bad URL.
    pub async fn start(settings: LedgerSettings) -> Result<Ledger, LedgerError> {
        settings.validate()?;
        let node_id = settings.node_id.clone();
        let counters = Arc::new(LedgerCounters::default());
        let spool = Arc::new(Spool::open(&settings.spool_dir, counters.clone())?);
        let (queue_tx, queue_rx) = mpsc::channel(settings.queue_capacity);
        let (durable_tx, durable_rx) = mpsc::channel(settings.queue_capacity);
        let (flush_tx, flush_rx) = mpsc::channel(16);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (finished_tx, finished_rx) = watch::channel(false);
        let mut writer = Writer {
            store: None,
            tip: None,
            retry_at: None,
            queue: queue_rx,
            durable: durable_rx,
            flush_requests: flush_rx,
            shutdown: shutdown_rx,
            finished: finished_tx,
            spool: spool.clone(),
            counters: counters.clone(),
            settings,
        };
        writer.open_store().await;
        tokio::spawn(writer.run());
        Ok(Ledger {
            queue: queue_tx,
            durable: durable_tx,
            shared: Arc::new(Shared {
                node_id,
                counters,
                spool,
                flush_requests: flush_tx,
                shutdown: shutdown_tx,
                finished: finished_rx,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The node id this ledger chains its records under.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Hands one record to the ledger without waiting: onto the queue, or,
    /// if that is full or the ledger is shut down, into the spool file.
    ///
    /// Errors only when the record could be neither queued nor spooled (the
    /// disk failed); it is then lost and counted in `records_lost`.
    pub fn record(&self, record: UsageRecord) -> Result<Admission, LedgerError> {
        let counters = &self.shared.counters;
        counters.received(record.priced);
        let mut pending = PendingRecord::new(record);
        let closed = self.shared.closed.load(Ordering::Acquire);
        if !closed {
            match self.queue.try_send(pending) {
                Ok(()) => return Ok(Admission::Queued),
                Err(TrySendError::Full(back) | TrySendError::Closed(back)) => pending = back,
            }
        }
        // Overflow: one small write, fsync'd by the writer's next tick (or
        // now, once no writer runs).
        match self
            .shared
            .spool
            .append(std::slice::from_ref(&pending), closed)
        {
            Ok(()) => Ok(Admission::Spooled),
            Err(e) => {
                counters.lost(1);
                tracing::error!(error = %e, request_id = %pending.record.request_id, "usage record lost: queue full and spool unwritable");
                Err(e)
            }
        }
    }

    /// Hands one record to the ledger and returns what resolves once it is
    /// durable (committed, or fsync'd in the spool). The writer commits it
    /// at once, with every other record waiting then (a group commit).
    /// When the strict queue is full or the ledger is shut down, the record
    /// is appended to the spool and fsync'd here.
    pub fn record_durable(&self, record: UsageRecord) -> DurableAck {
        let counters = &self.shared.counters;
        counters.received(record.priced);
        let pending = PendingRecord::new(record);
        let (done, ack) = oneshot::channel();
        let pending = if self.shared.closed.load(Ordering::Acquire) {
            pending
        } else {
            match self.durable.try_send(DurableRecord { pending, done }) {
                Ok(()) => return DurableAck(DurableState::Waiting(ack)),
                Err(TrySendError::Full(back) | TrySendError::Closed(back)) => back.pending,
            }
        };
        match self
            .shared
            .spool
            .append(std::slice::from_ref(&pending), true)
        {
            Ok(()) => DurableAck(DurableState::Done(true)),
            Err(e) => {
                counters.lost(1);
                tracing::error!(error = %e, request_id = %pending.record.request_id, "usage record lost: strict queue full and spool unwritable");
                DurableAck(DurableState::Done(false))
            }
        }
    }

    /// Writes everything queued so far (to the database, or the spool if it
    /// is down), then tries to replay the spool now. For admin "flush"
    /// calls and tests; the request path never needs it.
    pub async fn flush(&self) -> Result<FlushReport, LedgerError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.shared
            .flush_requests
            .send(reply_tx)
            .await
            .map_err(|_| LedgerError::Closed)?;
        reply_rx.await.map_err(|_| LedgerError::Closed)
    }

    /// Stops the writer after writing (or spooling) every queued record;
    /// records handed over afterwards go straight to the spool. Call on
    /// SIGTERM, before the runtime stops. Safe to call from several clones.
    pub async fn shutdown(&self) -> Result<(), LedgerError> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.shutdown.send_replace(true);
        let mut finished = self.shared.finished.clone();
        finished
            .wait_for(|done| *done)
            .await
            .map(|_| ())
            .map_err(|_| LedgerError::Closed)?;
        self.shared.spool.sync()
    }

    /// Whether a record handed over now has somewhere durable to go (the
    /// database answers, or the spool takes appends); strict durability
    /// refuses requests while it has not.
    pub fn can_persist(&self) -> bool {
        self.shared.counters.can_persist()
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> LedgerStats {
        let mut stats = self.shared.counters.snapshot();
        let capacity = self.queue.max_capacity();
        stats.queue_capacity = capacity as u64;
        stats.queue_depth = capacity.saturating_sub(self.queue.capacity()) as u64;
        stats
    }

    /// The shared counters themselves, for a metrics collector that keeps a
    /// reference instead of calling [`Ledger::stats`].
    pub fn counters(&self) -> Arc<LedgerCounters> {
        self.shared.counters.clone()
    }
}

/// The task that owns the database side.
struct Writer {
    settings: LedgerSettings,
    queue: mpsc::Receiver<PendingRecord>,
    /// Strict records: committed at once, their senders told.
    durable: mpsc::Receiver<DurableRecord>,
    flush_requests: mpsc::Receiver<oneshot::Sender<FlushReport>>,
    shutdown: watch::Receiver<bool>,
    finished: watch::Sender<bool>,
    /// `None` until the database could be opened.
    store: Option<Store>,
    /// The chain's last committed link; `None` when unknown (after a failed
    /// write whose outcome is uncertain): the next write reads it back.
    tip: Option<ChainTip>,
    /// Set after a failure: the database is not tried again before then.
    retry_at: Option<Instant>,
    spool: Arc<Spool>,
    counters: Arc<LedgerCounters>,
}

impl Writer {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.settings.retry_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let batch_size = self.settings.batch_size;
        let mut batch: Vec<PendingRecord> = Vec::with_capacity(batch_size);
        loop {
            // Shutdown may have been seen (and marked) inside `fill_batch`.
            if *self.shutdown.borrow() {
                break;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Some(reply) = self.flush_requests.recv() => {
                    while let Ok(pending) = self.queue.try_recv() {
                        batch.push(pending);
                        if batch.len() >= batch_size {
                            self.write_or_spool(&mut batch).await;
                        }
                    }
                    self.write_or_spool(&mut batch).await;
                    self.housekeeping(true).await;
                    let _ = reply.send(self.flush_report());
                }
                Some(first) = self.durable.recv() => {
                    self.commit_durable(first, &mut batch).await;
                }
                received = self.queue.recv_many(&mut batch, batch_size), if batch.is_empty() => {
                    if received == 0 {
                        break; // every handle dropped
                    }
                    self.fill_batch(&mut batch).await;
                    self.write_or_spool(&mut batch).await;
                }
                _ = tick.tick() => {
                    // A batch left over here could reach neither database nor spool.
                    self.write_or_spool(&mut batch).await;
                    self.housekeeping(false).await;
                }
            }
        }
        self.finish(batch).await;
    }

    /// A group commit: `first` and every strict record waiting now, with the
    /// ordinary queue's records, written (or spooled) at once; then each
    /// strict sender learns whether its record is durable.
    async fn commit_durable(&mut self, first: DurableRecord, batch: &mut Vec<PendingRecord>) {
        let batch_size = self.settings.batch_size;
        let mut waiting = vec![first.done];
        batch.push(first.pending);
        while batch.len() < batch_size {
            match self.durable.try_recv() {
                Ok(next) => {
                    waiting.push(next.done);
                    batch.push(next.pending);
                }
                Err(_) => break,
            }
        }
        while batch.len() < batch_size {
            match self.queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        self.write_or_spool(batch).await;
        let durable = batch.is_empty();
        for done in waiting {
            let _ = done.send(durable);
        }
    }

    /// Waits up to `flush_interval` for the batch to fill, or until shutdown
    /// begins (SIGTERM must not wait out a long interval). It naps between
    /// looks at the queue rather than waiting on it: a waiting receiver is
    /// woken, across threads, by every record sent, which cost the request
    /// path more than the record itself; a napping one is woken by nothing.
    async fn fill_batch(&mut self, batch: &mut Vec<PendingRecord>) {
        let deadline = Instant::now() + self.settings.flush_interval;
        let batch_size = self.settings.batch_size;
        loop {
            while batch.len() < batch_size {
                match self.queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if batch.len() >= batch_size || now >= deadline {
                return;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|closed| *closed) => return,
                _ = tokio::time::sleep(FILL_NAP.min(deadline - now)) => {}
            }
        }
    }

    fn database_usable(&self, force: bool) -> bool {
        self.store.is_some() && (force || self.retry_at.is_none_or(|at| Instant::now() >= at))
    }

    /// Writes `batch` to the database (after any spooled backlog, to keep
    /// order), or spools it. Leaves `batch` empty unless both failed.
    async fn write_or_spool(&mut self, batch: &mut Vec<PendingRecord>) {
        if batch.is_empty() {
            return;
        }
        if self.database_usable(false) {
            if self.spool.has_pending() {
                self.replay().await;
            }
            if self.database_usable(false) && self.write(batch, false).await.is_ok() {
                batch.clear();
                return;
            }
        }
        // The copy keeps the batch here, whatever happens to the blocking task.
        let records = batch.clone();
        match self
            .on_spool(move |spool| spool.append(&records, true))
            .await
        {
            Ok(()) => batch.clear(),
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "cannot spool usage records; holding them in memory and retrying");
            }
        }
    }

    /// One database write of `records` as the next links of the chain.
    async fn write(
        &mut self,
        records: &[PendingRecord],
        replayed: bool,
    ) -> Result<(), LedgerError> {
        let Some(store) = &self.store else {
            return Err(LedgerError::Closed);
        };
        let started = std::time::Instant::now();
        let limit = self.settings.write_timeout;
        let result = tokio::time::timeout(
            limit,
            store.append_chained(&self.settings.node_id, self.tip, records, replayed),
        )
        .await
        .unwrap_or(Err(LedgerError::Timeout {
            operation: "write batch",
            after: limit,
        }));
        self.counters
            .write_finished(started.elapsed(), result.is_ok());
        match result {
            Ok(appended) => {
                if self.retry_at.take().is_some() {
                    tracing::info!("ledger database is back");
                }
                self.tip = Some(appended.tip);
                self.counters.written(appended.inserted as u64, replayed);
                if appended.skipped > 0 {
                    tracing::info!(
                        skipped = appended.skipped,
                        "replay skipped records already stored"
                    );
                }
                Ok(())
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::warn!(error = %e, kind = e.kind(), "ledger database write failed; spooling until it recovers");
                }
                self.tip = None;
                self.retry_at = Some(Instant::now() + self.settings.retry_interval);
                Err(e)
            }
        }
    }

    /// Replays sealed spool segments, oldest first, until done or a write fails.
    async fn replay(&mut self) {
        let sealed = self.on_spool(|spool| {
            spool.seal()?;
            spool.sealed_segments()
        });
        let segments = match sealed.await {
            Ok(segments) => segments,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the spool");
                return;
            }
        };
        for path in segments {
            let read = self.on_spool(move |_| Spool::read_segment(&path));
            let contents = match read.await {
                Ok(contents) => contents,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a spool segment");
                    return;
                }
            };
            for chunk in contents.records.chunks(self.settings.batch_size) {
                if self.write(chunk, true).await.is_err() {
                    return;
                }
            }
            let finished = self.on_spool(move |spool| spool.finish_segment(&contents));
            if let Err(e) = finished.await {
                tracing::error!(error = %e, "cannot remove a replayed spool segment; it will be replayed again (idempotently)");
                return;
            }
        }
    }

    /// Periodic work: fsync overflow appends, reconnect, replay. `force`
    /// ignores the retry back-off (explicit flush).
    async fn housekeeping(&mut self, force: bool) {
        if let Err(e) = self.on_spool(|spool| spool.sync()).await {
            tracing::error!(error = %e, "cannot fsync the spool");
        }
        if self.store.is_none() && (force || self.retry_at.is_none_or(|at| Instant::now() >= at)) {
            self.open_store().await;
        }
        if self.spool.has_pending() && self.database_usable(force) {
            self.replay().await;
        }
    }

    async fn open_store(&mut self) {
        let limit = self.settings.write_timeout;
        let options = StoreOptions {
            max_connections: 2,
            acquire_timeout: limit,
        };
        let opened = tokio::time::timeout(
            limit,
            Store::open_with(&self.settings.database_url, &options),
        )
        .await
        .unwrap_or(Err(LedgerError::Timeout {
            operation: "open database",
            after: limit,
        }));
        match opened {
            Ok(store) => {
                self.store = Some(store);
                self.retry_at = None;
                self.tip = None;
                self.counters.set_database_up(true);
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::warn!(error = %e, kind = e.kind(), "cannot open the ledger database; spooling until it can");
                }
                self.retry_at = Some(Instant::now() + self.settings.retry_interval);
                self.counters.set_database_up(false);
            }
        }
    }

    /// Runs blocking spool I/O (writes, fsync, reads) off the async workers.
    async fn on_spool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Spool) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || work(&spool))
            .await
            .unwrap_or_else(|e| Err(LedgerError::spool("(spool task)")(std::io::Error::other(e))))
    }

    fn flush_report(&self) -> FlushReport {
        FlushReport {
            spool_pending_records: self.counters.spool_pending_records(),
            database_up: self.store.is_some() && self.retry_at.is_none(),
        }
    }

    /// Shutdown: no more records enter the queue; what is in it goes to the
    /// database if it is up, else to the spool.
    async fn finish(mut self, mut batch: Vec<PendingRecord>) {
        self.durable.close();
        while let Some(next) = self.durable.recv().await {
            self.commit_durable(next, &mut batch).await;
            self.give_up_if_stuck(&mut batch);
        }
        self.queue.close();
        while let Some(pending) = self.queue.recv().await {
            batch.push(pending);
            if batch.len() >= self.settings.batch_size {
                self.write_or_spool(&mut batch).await;
                self.give_up_if_stuck(&mut batch);
            }
        }
        self.write_or_spool(&mut batch).await;
        self.give_up_if_stuck(&mut batch);
        if let Err(e) = self.on_spool(|spool| spool.seal()).await {
            tracing::error!(error = %e, "cannot fsync the spool at shutdown");
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
        self.finished.send_replace(true);
    }

    /// At shutdown there is no later retry: records that reached neither
    /// the database nor the spool are lost.
    fn give_up_if_stuck(&self, batch: &mut Vec<PendingRecord>) {
        if !batch.is_empty() {
            self.counters.lost(batch.len() as u64);
            tracing::error!(
                records = batch.len(),
                "usage records lost at shutdown: database and spool both failed"
            );
            batch.clear();
        }
    }
}

//! Counters for metrics, as plain atomics: the proxy reads them on each
//! Prometheus scrape (this crate does not depend on prometheus).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the write-latency histogram buckets, in the
/// Prometheus `le` sense; a last `+Inf` bucket is implied.
pub const WRITE_LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Everything the ledger counts. Shared by the handle, the writer and the
/// spool; read through [`LedgerCounters::snapshot`].
#[derive(Debug, Default)]
pub struct LedgerCounters {
    records_received: AtomicU64,
    records_written: AtomicU64,
    records_replayed: AtomicU64,
    records_spooled: AtomicU64,
    records_lost: AtomicU64,
    unpriced_records: AtomicU64,
    writes_failed: AtomicU64,
    spool_pending_records: AtomicU64,
    spool_bytes: AtomicU64,
    spool_corrupt_lines: AtomicU64,
    database_up: AtomicBool,
    /// The last spool append failed (a full or broken disk).
    spool_failing: AtomicBool,
    write_latency: LatencyHistogram,
}

/// A point-in-time copy of [`LedgerCounters`], plus the queue gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerStats {
    /// Records waiting in the in-memory queue now (gauge).
    pub queue_depth: u64,
    /// Capacity of that queue.
    pub queue_capacity: u64,
    /// Records passed to [`crate::Ledger::record`] (counter).
    pub records_received: u64,
    /// Records committed to the database, replayed ones included (counter).
    pub records_written: u64,
    /// Of those, records that came from the spool (counter).
    pub records_replayed: u64,
    /// Records appended to the spool: queue full, database down or slow, or
    /// shutdown (counter).
    pub records_spooled: u64,
    /// Records that could be neither queued nor spooled: the disk failed
    /// (counter; anything but 0 needs a person).
    pub records_lost: u64,
    /// Records without a known price (counter).
    pub unpriced_records: u64,
    /// Database writes (batches) that failed or timed out (counter).
    pub writes_failed: u64,
    /// Records in the spool now (gauge).
    pub spool_pending_records: u64,
    /// Bytes in the spool now (gauge).
    pub spool_bytes: u64,
    /// Unreadable spool lines found on replay (counter).
    pub spool_corrupt_lines: u64,
    /// Whether the last database write or connect succeeded (gauge).
    pub database_up: bool,
    /// Whether the last spool append failed (gauge).
    pub spool_failing: bool,
    /// Latency of database writes (batches), successful or not.
    pub write_latency: HistogramSnapshot,
}

/// A cumulative histogram in Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds ([`WRITE_LATENCY_BUCKETS`]).
    pub bounds: &'static [f64],
    /// Observations at or below each bound (cumulative), same length as `bounds`.
    pub cumulative_counts: Vec<u64>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

#[derive(Debug, Default)]
struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [AtomicU64; WRITE_LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = WRITE_LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(WRITE_LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative_counts = self.buckets[..WRITE_LATENCY_BUCKETS.len()]
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: &WRITE_LATENCY_BUCKETS,
            cumulative_counts,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

fn saturating_sub(counter: &AtomicU64, amount: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(amount))
    });
}

impl LedgerCounters {
    /// Copies every counter (queue gauges are filled in by [`crate::Ledger::stats`]).
    pub fn snapshot(&self) -> LedgerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LedgerStats {
            queue_depth: 0,
            queue_capacity: 0,
            records_received: get(&self.records_received),
            records_written: get(&self.records_written),
            records_replayed: get(&self.records_replayed),
            records_spooled: get(&self.records_spooled),
            records_lost: get(&self.records_lost),
            unpriced_records: get(&self.unpriced_records),
            writes_failed: get(&self.writes_failed),
            spool_pending_records: get(&self.spool_pending_records),
            spool_bytes: get(&self.spool_bytes),
            spool_corrupt_lines: get(&self.spool_corrupt_lines),
            database_up: self.database_up.load(Ordering::Relaxed),
            spool_failing: self.spool_failing.load(Ordering::Relaxed),
            write_latency: self.write_latency.snapshot(),
        }
    }

    pub(crate) fn received(&self, priced: bool) {
        self.records_received.fetch_add(1, Ordering::Relaxed);
        if !priced {
            self.unpriced_records.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn written(&self, records: u64, replayed: bool) {
        self.records_written.fetch_add(records, Ordering::Relaxed);
        if replayed {
            self.records_replayed.fetch_add(records, Ordering::Relaxed);
        }
    }

    pub(crate) fn lost(&self, records: u64) {
        self.records_lost.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn write_finished(&self, elapsed: Duration, ok: bool) {
        self.write_latency.observe(elapsed);
        if !ok {
            self.writes_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.set_database_up(ok);
    }

    pub(crate) fn set_database_up(&self, up: bool) {
        self.database_up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn set_spool_failing(&self, failing: bool) {
        self.spool_failing.store(failing, Ordering::Relaxed);
    }

    /// Whether a record handed over now has somewhere durable to go: the
    /// database answers, or the spool still takes appends.
    pub fn can_persist(&self) -> bool {
        self.database_up.load(Ordering::Relaxed) || !self.spool_failing.load(Ordering::Relaxed)
    }

    pub(crate) fn spool_added(&self, records: u64, bytes: u64) {
        self.records_spooled.fetch_add(records, Ordering::Relaxed);
        self.spool_pending_records
            .fetch_add(records, Ordering::Relaxed);
        self.spool_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn spool_removed(&self, records: u64, bytes: u64) {
        saturating_sub(&self.spool_pending_records, records);
        saturating_sub(&self.spool_bytes, bytes);
    }

    pub(crate) fn spool_corrupt_lines_found(&self, lines: u64) {
        self.spool_corrupt_lines.fetch_add(lines, Ordering::Relaxed);
    }

    pub(crate) fn spool_pending_records(&self) -> u64 {
        self.spool_pending_records.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let counters = LedgerCounters::default();
        counters.write_finished(Duration::from_micros(500), true);
        counters.write_finished(Duration::from_millis(30), true);
        counters.write_finished(Duration::from_secs(60), false);
        let stats = counters.snapshot();
        let h = &stats.write_latency;
        assert_eq!(h.count, 3);
        assert_eq!(h.cumulative_counts[0], 1); // <= 1 ms
        assert_eq!(h.cumulative_counts[5], 2); // <= 50 ms
        assert_eq!(*h.cumulative_counts.last().unwrap(), 2); // 60 s only in +Inf
        assert!((h.sum_seconds - 60.0305).abs() < 1e-9);
        assert_eq!(stats.writes_failed, 1);
        assert!(!stats.database_up);
    }

    #[test]
    fn spool_gauges_never_underflow() {
        let counters = LedgerCounters::default();
        counters.spool_added(2, 100);
        counters.spool_removed(5, 500);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.spool_pending_records,
                stats.spool_bytes,
                stats.records_spooled
            ),
            (0, 0, 2)
        );
    }
}

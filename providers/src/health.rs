//! Per-upstream health: a circuit breaker over a sliding window, requests in
//! flight, a latency moving average, and a cool-down set by `retry-after`.
//!
//! The breaker is closed while the failure ratio over the window stays under
//! the threshold (or too few attempts were seen); past it, it opens and the
//! upstream is skipped for `open_for`; then exactly one probe is let through
//! (half-open): success closes it, failure opens it again.

use sluice_config::BreakerSettings;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets the window is divided into.
const BUCKETS: usize = 10;
/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

/// Breaker state, for metrics (`sluice_upstream_breaker_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Skipped until the open period ends.
    Open,
    /// One probe is in flight or allowed.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    /// (bucket start, successes, failures), oldest overwritten.
    buckets: [(Option<Instant>, u32, u32); BUCKETS],
    open_until: Option<Instant>,
    probe_in_flight: bool,
}

impl Breaker {
    fn bucket(&mut self, now: Instant) -> &mut (Option<Instant>, u32, u32) {
        let width = self.settings.window / BUCKETS as u32;
        let index = self.buckets.iter().position(|b| {
            b.0.is_some_and(|start| now.saturating_duration_since(start) < width)
        });
        let index = match index {
            Some(i) => i,
            None => {
                // Reuse the oldest (or an empty) bucket.
                let i = self
                    .buckets
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.0)
                    .map_or(0, |(i, _)| i);
                self.buckets[i] = (Some(now), 0, 0);
                i
            }
        };
        &mut self.buckets[index]
    }

    fn totals(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| {
                b.0.is_some_and(|s| now.saturating_duration_since(s) < self.settings.window)
            })
            .fold((0, 0), |(ok, bad), b| (ok + b.1, bad + b.2))
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probe_in_flight => false,
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                true
            }
        }
    }

    fn record(&mut self, ok: bool, now: Instant) {
        if self.open_until.is_some() {
            // The half-open probe decides.
            self.probe_in_flight = false;
            if ok {
                self.open_until = None;
                self.buckets = [(None, 0, 0); BUCKETS];
            } else {
                self.open_until = Some(now + self.settings.open_for);
            }
            return;
        }
        let bucket = self.bucket(now);
        if ok {
            bucket.1 += 1;
        } else {
            bucket.2 += 1;
        }
        let (good, bad) = self.totals(now);
        let total = good + bad;
        if !ok
            && total >= self.settings.min_requests
            && f64::from(bad) / f64::from(total) >= self.settings.failure_ratio
        {
            self.open_until = Some(now + self.settings.open_for);
        }
    }
}

/// Health of one upstream, shared by every request.
#[derive(Debug)]
pub struct UpstreamHealth {
    breaker: Mutex<Breaker>,
    in_flight: AtomicU32,
    /// Latency to response headers, microseconds; 0 before the first sample.
    latency_ewma_us: AtomicU64,
    cooldown_until: Mutex<Option<Instant>>,
}

/// One attempt on an upstream; report how it went with [`AttemptGuard::succeeded`]
/// or [`AttemptGuard::failed`]. Dropped unreported (the client left), it counts
/// for neither.
#[derive(Debug)]
pub struct AttemptGuard<'h> {
    health: &'h UpstreamHealth,
    started: Instant,
    reported: bool,
}

impl UpstreamHealth {
    /// A healthy upstream under `settings`.
    pub fn new(settings: BreakerSettings) -> Self {
        UpstreamHealth {
            breaker: Mutex::new(Breaker {
                settings,
                buckets: [(None, 0, 0); BUCKETS],
                open_until: None,
                probe_in_flight: false,
            }),
            in_flight: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(0),
            cooldown_until: Mutex::new(None),
        }
    }

    /// Starts an attempt, unless the breaker is open or a `retry-after`
    /// cool-down is running; `Err` says which.
    pub fn begin(&self) -> Result<AttemptGuard<'_>, &'static str> {
        let now = Instant::now();
        if self
            .cooldown_until
            .lock()
            .is_ok_and(|c| c.is_some_and(|until| now < until))
        {
            return Err("cooling down after retry-after");
        }
        if !self.breaker.lock().is_ok_and(|mut b| b.allow(now)) {
            return Err("circuit open");
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(AttemptGuard {
            health: self,
            started: now,
            reported: false,
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Latency moving average in microseconds (0: no sample yet).
    pub fn latency_ewma_us(&self) -> u64 {
        self.latency_ewma_us.load(Ordering::Relaxed)
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }

    /// Skips this upstream until `retry_after` has passed.
    pub fn cool_down(&self, retry_after: Duration) {
        if let Ok(mut c) = self.cooldown_until.lock() {
            *c = Some(Instant::now() + retry_after);
        }
    }
}

impl AttemptGuard<'_> {
    /// The upstream answered (headers arrived, not a failover status).
    pub fn succeeded(mut self) {
        self.reported = true;
        let us = self.started.elapsed().as_micros() as u64;
        let old = self.health.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            us
        } else {
            (EWMA_ALPHA * us as f64 + (1.0 - EWMA_ALPHA) * old as f64) as u64
        };
        self.health
            .latency_ewma_us
            .store(new.max(1), Ordering::Relaxed);
        if let Ok(mut b) = self.health.breaker.lock() {
            b.record(true, Instant::now());
        }
    }

    /// The upstream failed (connect error, timeout, 429, 5xx).
    pub fn failed(mut self) {
        self.reported = true;
        if let Ok(mut b) = self.health.breaker.lock() {
            b.record(false, Instant::now());
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.reported {
            // Not the upstream's fault; but a half-open probe must not stay claimed.
            if let Ok(mut b) = self.health.breaker.lock() {
                b.probe_in_flight = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_ratio: 0.5,
            min_requests: 4,
            window: Duration::from_secs(30),
            open_for: Duration::from_millis(50),
        }
    }

    #[test]
    fn opens_on_failure_ratio_then_probes_once_and_closes() {
        let h = UpstreamHealth::new(settings());
        h.begin().unwrap().succeeded();
        h.begin().unwrap().succeeded();
        h.begin().unwrap().failed();
        assert_eq!(h.breaker_state(), BreakerState::Closed, "3 < min_requests");
        h.begin().unwrap().failed();
        assert_eq!(h.breaker_state(), BreakerState::Open);
        assert_eq!(h.begin().err(), Some("circuit open"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(h.breaker_state(), BreakerState::HalfOpen);
        let probe = h.begin().unwrap();
        assert!(h.begin().is_err(), "one probe at a time");
        probe.succeeded();
        assert_eq!(h.breaker_state(), BreakerState::Closed);
        assert!(h.begin().is_ok());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let h = UpstreamHealth::new(BreakerSettings {
            min_requests: 1,
            ..settings()
        });
        h.begin().unwrap().failed();
        std::thread::sleep(Duration::from_millis(60));
        h.begin().unwrap().failed();
        assert_eq!(h.breaker_state(), BreakerState::Open);
    }

    #[test]
    fn abandoned_attempts_count_for_nothing_and_free_the_probe() {
        let h = UpstreamHealth::new(BreakerSettings {
            min_requests: 1,
            ..settings()
        });
        h.begin().unwrap().failed();
        std::thread::sleep(Duration::from_millis(60));
        drop(h.begin().unwrap());
        assert_eq!(h.in_flight(), 0);
        assert!(h.begin().is_ok(), "the probe slot was freed");
    }

    #[test]
    fn retry_after_cools_down_and_latency_averages() {
        let h = UpstreamHealth::new(settings());
        h.cool_down(Duration::from_millis(30));
        assert_eq!(h.begin().err(), Some("cooling down after retry-after"));
        std::thread::sleep(Duration::from_millis(40));
        let a = h.begin().unwrap();
        assert_eq!(h.in_flight(), 1);
        a.succeeded();
        assert!(h.latency_ewma_us() > 0);
        assert_eq!(h.in_flight(), 0);
    }
}

//! The node's slots for running requests, and a fair queue for the rest.
//!
//! Start at [`FairQueue::acquire`]. While a slot is free and nobody waits, a
//! request takes one at once (one lock, no allocation). Beyond that it waits
//! in its tenant's lane; a freed slot goes to the highest priority class
//! waiting and, within it, to tenants in smooth weighted round-robin (nginx's
//! algorithm), not first come first served. The queue is bounded and a wait
//! has a deadline. No crate offers weighted per-tenant admission with
//! priorities (tokio's `Semaphore` is FIFO only), hence this one.

use crate::auth::Priority;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue already holds its most waiting requests.
    #[error("The server is at capacity and its queue is full; retry shortly.")]
    Full,
    /// No slot came free within the queue timeout.
    #[error("The server is at capacity; no slot came free within {0:?}.")]
    TimedOut(Duration),
}

struct Waiter {
    ticket: u64,
    priority: Priority,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct Lane {
    /// Smooth weighted round-robin credit.
    credit: i64,
    /// Highest priority first, first come first served within one.
    waiters: VecDeque<Waiter>,
}

struct State {
    running: usize,
    waiting: usize,
    next_ticket: u64,
    lanes: BTreeMap<String, Lane>,
}

/// Slots for running requests on this node, and who waits for one.
pub struct FairQueue {
    max_running: usize,
    max_waiting: usize,
    timeout: Duration,
    weights: BTreeMap<String, u32>,
    state: Mutex<State>,
}

/// A running request's slot, given back when dropped.
pub struct Slot {
    queue: Arc<FairQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.running = state.running.saturating_sub(1);
        self.queue.dispatch(&mut state);
    }
}

/// A place in a lane; leaving early (timeout, client gone) removes it, or
/// gives back the slot it was handed meanwhile.
struct Queued {
    queue: Arc<FairQueue>,
    tenant: String,
    ticket: u64,
    /// Fires when a slot is handed over. Held here, so that it outlives the
    /// lock that `Drop` takes: a grant can never find it gone.
    granted: oneshot::Receiver<()>,
    /// Set once the outcome is settled (slot taken, or place withdrawn).
    settled: bool,
}

impl Queued {
    /// Takes the place out of its lane; false when it was granted a slot already.
    fn withdraw(&mut self) -> bool {
        let mut state = self.queue.lock();
        let Some(lane) = state.lanes.get_mut(&self.tenant) else {
            return false;
        };
        let Some(at) = lane.waiters.iter().position(|w| w.ticket == self.ticket) else {
            return false;
        };
        lane.waiters.remove(at);
        if lane.waiters.is_empty() {
            state.lanes.remove(&self.tenant);
        }
        state.waiting -= 1;
        self.settled = true;
        true
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.settled && !self.withdraw() {
            // Granted while leaving: pass the slot on.
            let mut state = self.queue.lock();
            state.running = state.running.saturating_sub(1);
            self.queue.dispatch(&mut state);
        }
    }
}

impl FairQueue {
    /// `max_running` slots, at most `max_waiting` waiting for `timeout` each;
    /// `weights` per tenant (default 1).
    pub fn new(
        max_running: usize,
        max_waiting: usize,
        timeout: Duration,
        weights: BTreeMap<String, u32>,
    ) -> Arc<Self> {
        Arc::new(FairQueue {
            max_running,
            max_waiting,
            timeout,
            weights,
            state: Mutex::new(State {
                running: 0,
                waiting: 0,
                next_ticket: 0,
                lanes: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still
        // consistent (every change is a single step), so go on with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot at once, when one is free and nobody waits (one lock, no
    /// allocation); `None` when the caller would have to queue.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.lock();
        self.take_free(&mut state).then(|| Slot {
            queue: self.clone(),
        })
    }

    /// Takes a free slot if there is one and nobody waits for it.
    fn take_free(&self, state: &mut State) -> bool {
        let free = state.running < self.max_running && state.waiting == 0;
        if free {
            state.running += 1;
        }
        free
    }

    /// `(running, waiting)` now.
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.waiting)
    }

    /// A slot for a request of `tenant` at `priority`: at once when one is
    /// free and nobody waits, else after waiting its turn.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        priority: Priority,
    ) -> Result<Slot, QueueError> {
        let mut queued = {
            let mut state = self.lock();
            if self.take_free(&mut state) {
                return Ok(Slot {
                    queue: self.clone(),
                });
            }
            if state.waiting >= self.max_waiting {
                return Err(QueueError::Full);
            }
            let (wake, granted) = oneshot::channel();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting += 1;
            let lane = state.lanes.entry(tenant.to_string()).or_default();
            let at = lane
                .waiters
                .iter()
                .position(|w| w.priority < priority)
                .unwrap_or(lane.waiters.len());
            lane.waiters.insert(
                at,
                Waiter {
                    ticket,
                    priority,
                    wake,
                },
            );
            Queued {
                queue: self.clone(),
                tenant: tenant.to_string(),
                ticket,
                granted,
                settled: false,
            }
        };
        let outcome = tokio::time::timeout(self.timeout, &mut queued.granted).await;
        if matches!(outcome, Ok(Ok(()))) || !queued.withdraw() {
            // Granted, possibly just as the wait timed out.
            queued.settled = true;
            return Ok(Slot {
                queue: self.clone(),
            });
        }
        Err(QueueError::TimedOut(self.timeout))
    }

    /// Hands free slots to waiters: highest priority class first, tenants
    /// within it in smooth weighted round-robin.
    fn dispatch(&self, state: &mut State) {
        while state.running < self.max_running && state.waiting > 0 {
            let Some(top) = state
                .lanes
                .values()
                .filter_map(|l| l.waiters.front().map(|w| w.priority))
                .max()
            else {
                return;
            };
            let mut total = 0i64;
            let mut chosen: Option<(&String, i64)> = None;
            for (tenant, lane) in state.lanes.iter_mut() {
                if lane.waiters.front().map(|w| w.priority) != Some(top) {
                    continue;
                }
                let weight = i64::from(self.weights.get(tenant).copied().unwrap_or(1));
                total += weight;
                lane.credit += weight;
                if chosen.is_none_or(|(_, best)| lane.credit > best) {
                    chosen = Some((tenant, lane.credit));
                }
            }
            let Some(tenant) = chosen.map(|(t, _)| t.clone()) else {
                return;
            };
            let Some(lane) = state.lanes.get_mut(&tenant) else {
                return;
            };
            lane.credit -= total;
            let waiter = lane.waiters.pop_front();
            if lane.waiters.is_empty() {
                state.lanes.remove(&tenant);
            }
            state.waiting -= 1;
            if let Some(waiter) = waiter {
                // The receiver lives as long as its `Queued`, whose drop
                // takes the lock first, so this send cannot find it gone.
                if waiter.wake.send(()).is_ok() {
                    state.running += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn admits_tenants_in_their_weights_not_in_arrival_order() {
        let queue = FairQueue::new(
            1,
            100,
            Duration::from_secs(5),
            weights(&[("a", 3), ("b", 1)]),
        );
        let holder = queue.acquire("x", Priority::Standard).await.unwrap();
        let order = Arc::new(StdMutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // b arrives first, all of it, then a.
        for tenant in ["b"; 8].into_iter().chain(["a"; 8]) {
            let (queue, order) = (queue.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = queue.acquire(tenant, Priority::Standard).await.unwrap();
                order.lock().unwrap().push(tenant);
                settle().await;
                drop(slot);
            }));
            settle().await;
        }
        assert_eq!(queue.load(), (1, 16));
        drop(holder);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let first_eight = &order[..8];
        assert_eq!(
            first_eight.iter().filter(|t| **t == "a").count(),
            6,
            "{order:?}"
        );
        assert_eq!(queue.load(), (0, 0));
    }

    #[tokio::test]
    async fn higher_priority_goes_first() {
        let queue = FairQueue::new(1, 10, Duration::from_secs(5), BTreeMap::new());
        let holder = queue.acquire("x", Priority::Standard).await.unwrap();
        let order = Arc::new(StdMutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (tenant, p) in [
            ("a", Priority::Batch),
            ("b", Priority::Standard),
            ("a", Priority::Interactive),
        ] {
            let (queue, order) = (queue.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = queue.acquire(tenant, p).await.unwrap();
                order.lock().unwrap().push(p);
                settle().await;
                drop(slot);
            }));
            settle().await;
        }
        drop(holder);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![Priority::Interactive, Priority::Standard, Priority::Batch]
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        let queue = FairQueue::new(1, 1, Duration::from_millis(50), BTreeMap::new());
        let _holder = queue.acquire("x", Priority::Standard).await.unwrap();
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.acquire("a", Priority::Standard).await.err() })
        };
        settle().await;
        assert_eq!(
            queue.acquire("b", Priority::Standard).await.err(),
            Some(QueueError::Full)
        );
        assert_eq!(
            waiting.await.unwrap(),
            Some(QueueError::TimedOut(Duration::from_millis(50)))
        );
        assert_eq!(queue.load(), (1, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_gives_its_place_up() {
        let queue = FairQueue::new(1, 10, Duration::from_secs(5), BTreeMap::new());
        let holder = queue.acquire("x", Priority::Standard).await.unwrap();
        let leaving = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.acquire("a", Priority::Standard).await.is_ok() })
        };
        settle().await;
        leaving.abort();
        let _ = leaving.await;
        assert_eq!(queue.load(), (1, 0));
        drop(holder);
        assert_eq!(queue.load(), (0, 0));
        let _slot = queue.acquire("b", Priority::Standard).await.unwrap();
        assert_eq!(queue.load(), (1, 0));
    }
}

//! Live streams: every forwarded request's id, owner, state and control.
//!
//! Start at [`StreamRegistry`]. [`StreamRegistry::register`] gives a request
//! its [`StreamHandle`]: the id (sent back as `x-sluice-stream-id`) and a
//! [`watch`] receiver of [`Control`] that the relay obeys. The control API
//! calls [`StreamRegistry::command`] with the caller's [`Viewer`]; a stream
//! of another tenant answers `None`, exactly like an unknown id, so ids leak
//! nothing. Dropping the handle removes the stream.

use crate::auth::Priority;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::watch;

/// Why a stream ended before its upstream finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The client went away.
    Client,
    /// `POST /v1/streams/{id}/cancel`.
    Api,
    /// Cancelled in favour of higher-priority work.
    Preempt,
    /// The hard budget was reached.
    Budget,
    /// Paused for longer than `streams.max_pause_ms`.
    PauseTimeout,
}

impl EndCause {
    /// Metric label and the `cause` in the closing event.
    pub fn label(self) -> &'static str {
        match self {
            EndCause::Client => "client",
            EndCause::Api => "api",
            EndCause::Preempt => "preempt",
            EndCause::Budget => "budget",
            EndCause::PauseTimeout => "pause_timeout",
        }
    }
}

/// What the relay of a stream is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Forward as usual.
    Run,
    /// Stop reading upstream and writing to the client, keep everything.
    Pause,
    /// End now, cleanly, for `cause`.
    End {
        /// Who ended it.
        cause: EndCause,
        /// Free text given with a preemption.
        reason: Option<String>,
    },
}

/// A control API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// End the stream.
    Cancel,
    /// Pause it.
    Pause,
    /// Resume a paused stream.
    Resume,
    /// End it in favour of higher-priority work.
    Preempt,
}

impl Command {
    /// The verb of `/v1/streams/{id}/{verb}`.
    pub fn parse(verb: &str) -> Option<Self> {
        match verb {
            "cancel" => Some(Command::Cancel),
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "preempt" => Some(Command::Preempt),
            _ => None,
        }
    }

    /// The verb as written in the path.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Cancel => "cancel",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Preempt => "preempt",
        }
    }
}

/// Who is looking: admins see every stream, anyone else their tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The admin key.
    Admin,
    /// A tenant's key; `None` when auth is off (sees streams without a tenant).
    Tenant(Option<String>),
}

impl Viewer {
    fn sees(&self, tenant: Option<&str>) -> bool {
        match self {
            Viewer::Admin => true,
            Viewer::Tenant(own) => own.as_deref() == tenant,
        }
    }

    /// For the cross-node bus.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Viewer::Admin => json!({"admin": true}),
            Viewer::Tenant(t) => json!({"tenant": t}),
        }
    }

    /// The inverse of [`Viewer::to_json`]; anything odd sees nothing.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        if v.get("admin").and_then(|a| a.as_bool()) == Some(true) {
            return Some(Viewer::Admin);
        }
        match v.get("tenant")? {
            serde_json::Value::Null => Some(Viewer::Tenant(None)),
            serde_json::Value::String(t) => Some(Viewer::Tenant(Some(t.clone()))),
            _ => None,
        }
    }
}

/// Which running streams a preemption may pick from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within<'a> {
    /// Any stream on this node.
    Node,
    /// Streams of one tenant.
    Tenant(&'a str),
    /// Streams of one key.
    Key(&'a str),
}

/// Whose stream it is and what it serves.
#[derive(Debug, Clone)]
pub struct StreamOwner {
    /// The caller's tenant, if keyed.
    pub tenant: Option<String>,
    /// The caller's key id, if keyed.
    pub key_id: Option<String>,
    /// The model asked for.
    pub model: String,
    /// Effective priority.
    pub priority: Priority,
}

/// A stream as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamView {
    /// Stream id.
    pub id: String,
    /// Owner's tenant.
    pub tenant: Option<String>,
    /// Owner's key id.
    pub key_id: Option<String>,
    /// The model asked for.
    pub model: String,
    /// The upstream serving it, once one answered.
    pub target: Option<String>,
    /// Priority class.
    pub priority: String,
    /// Tokens delivered so far (estimated from text while streaming).
    pub tokens: u64,
    /// Milliseconds since it started.
    pub age_ms: u64,
    /// `queued`, `running`, `paused` or `ending`.
    pub state: String,
    /// The node holding it.
    pub node: String,
}

impl StreamView {
    /// The JSON object the control API returns.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "object": "sluice.stream",
            "tenant": self.tenant,
            "key_id": self.key_id,
            "model": self.model,
            "target": self.target,
            "priority": self.priority,
            "tokens": self.tokens,
            "age_ms": self.age_ms,
            "state": self.state,
            "node": self.node,
        })
    }

    /// The inverse of [`StreamView::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let text = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
        Some(StreamView {
            id: text("id")?,
            tenant: text("tenant"),
            key_id: text("key_id"),
            model: text("model")?,
            target: text("target"),
            priority: text("priority")?,
            tokens: v.get("tokens")?.as_u64()?,
            age_ms: v.get("age_ms")?.as_u64()?,
            state: text("state")?,
            node: text("node")?,
        })
    }
}

/// How many streams are in each state, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Waiting in the fair queue.
    pub queued: usize,
    /// Forwarding.
    pub running: usize,
    /// Paused.
    pub paused: usize,
}

struct LiveStream {
    id: String,
    owner: StreamOwner,
    started: Instant,
    target: OnceLock<String>,
    tokens: AtomicU64,
    queued: AtomicBool,
    control: watch::Sender<Control>,
}

impl LiveStream {
    fn view(&self, node: &str) -> StreamView {
        let state = match &*self.control.borrow() {
            Control::End { .. } => "ending",
            Control::Pause => "paused",
            Control::Run if self.queued.load(Ordering::Relaxed) => "queued",
            Control::Run => "running",
        };
        StreamView {
            id: self.id.clone(),
            tenant: self.owner.tenant.clone(),
            key_id: self.owner.key_id.clone(),
            model: self.owner.model.clone(),
            target: self.target.get().cloned(),
            priority: self.owner.priority.as_str().to_string(),
            tokens: self.tokens.load(Ordering::Relaxed),
            age_ms: self.started.elapsed().as_millis() as u64,
            state: state.to_string(),
            node: node.to_string(),
        }
    }

    fn is_ending(&self) -> bool {
        matches!(*self.control.borrow(), Control::End { .. })
    }
}

/// Every live stream on this node.
pub struct StreamRegistry {
    node: String,
    live: Mutex<HashMap<String, Arc<LiveStream>>>,
}

impl StreamRegistry {
    /// An empty registry for the node named `node`.
    pub fn new(node: impl Into<String>) -> Arc<Self> {
        Arc::new(StreamRegistry {
            node: node.into(),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A fresh, unguessable stream id: `st_` and 16 hex digits.
    pub fn mint_id() -> String {
        format!("st_{:016x}", rand::random::<u64>())
    }

    /// Starts tracking a stream; it is forgotten when the handle drops.
    /// `queued` marks it waiting for a slot until [`StreamHandle::admitted`].
    pub fn register(
        self: &Arc<Self>,
        id: String,
        owner: StreamOwner,
        queued: bool,
    ) -> StreamHandle {
        let (control, receiver) = watch::channel(Control::Run);
        let stream = Arc::new(LiveStream {
            id,
            owner,
            started: Instant::now(),
            target: OnceLock::new(),
            tokens: AtomicU64::new(0),
            queued: AtomicBool::new(queued),
            control,
        });
        if let Ok(mut live) = self.live.lock() {
            live.insert(stream.id.clone(), stream.clone());
        }
        StreamHandle {
            stream,
            registry: self.clone(),
            control: receiver,
        }
    }

    fn find(&self, id: &str, viewer: &Viewer) -> Option<Arc<LiveStream>> {
        let live = self.live.lock().ok()?;
        live.get(id)
            .filter(|s| viewer.sees(s.owner.tenant.as_deref()))
            .cloned()
    }

    /// One stream, if `viewer` may see it.
    pub fn get(&self, id: &str, viewer: &Viewer) -> Option<StreamView> {
        self.find(id, viewer).map(|s| s.view(&self.node))
    }

    /// The streams `viewer` may see, oldest first.
    pub fn list(&self, viewer: &Viewer) -> Vec<StreamView> {
        let Ok(live) = self.live.lock() else {
            return Vec::new();
        };
        let mut streams: Vec<&Arc<LiveStream>> = live
            .values()
            .filter(|s| viewer.sees(s.owner.tenant.as_deref()))
            .collect();
        streams.sort_by_key(|s| s.started);
        streams.iter().map(|s| s.view(&self.node)).collect()
    }

    /// Applies `command` to stream `id`; `None` when there is no such stream
    /// or `viewer` may not see it. Pausing a paused stream, resuming a
    /// running one or cancelling an ending one changes nothing.
    pub fn command(
        &self,
        id: &str,
        viewer: &Viewer,
        command: Command,
        reason: Option<String>,
    ) -> Option<StreamView> {
        let stream = self.find(id, viewer)?;
        stream.control.send_if_modified(|current| {
            let next = match (command, &*current) {
                (_, Control::End { .. }) => return false,
                (Command::Cancel, _) => Control::End {
                    cause: EndCause::Api,
                    reason,
                },
                (Command::Preempt, _) => Control::End {
                    cause: EndCause::Preempt,
                    reason,
                },
                (Command::Pause, Control::Run) => Control::Pause,
                (Command::Resume, Control::Pause) => Control::Run,
                _ => return false,
            };
            *current = next;
            true
        });
        Some(stream.view(&self.node))
    }

    /// Ends the lowest-priority stream `within` whose priority is below
    /// `above` (the youngest among equals: it has the least to lose), and
    /// returns a way to wait until it is gone.
    pub fn preempt_lowest(
        &self,
        within: Within<'_>,
        above: Priority,
        reason: &str,
    ) -> Option<Preempted> {
        let victim = {
            let live = self.live.lock().ok()?;
            live.values()
                .filter(|s| s.owner.priority < above && !s.is_ending())
                .filter(|s| match within {
                    // A queued stream holds no node slot: ending it frees none.
                    Within::Node => !s.queued.load(Ordering::Relaxed),
                    Within::Tenant(t) => s.owner.tenant.as_deref() == Some(t),
                    Within::Key(k) => s.owner.key_id.as_deref() == Some(k),
                })
                .min_by_key(|s| (s.owner.priority, std::cmp::Reverse(s.started)))
                .cloned()?
        };
        victim.control.send_replace(Control::End {
            cause: EndCause::Preempt,
            reason: Some(reason.to_string()),
        });
        Some(Preempted { stream: victim })
    }

    /// Streams per state.
    pub fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        if let Ok(live) = self.live.lock() {
            for s in live.values() {
                match &*s.control.borrow() {
                    Control::Pause => counts.paused += 1,
                    _ if s.queued.load(Ordering::Relaxed) => counts.queued += 1,
                    _ => counts.running += 1,
                }
            }
        }
        counts
    }
}

/// A stream told to end by a preemption.
pub struct Preempted {
    stream: Arc<LiveStream>,
}

impl Preempted {
    /// The preempted stream's id.
    pub fn id(&self) -> &str {
        &self.stream.id
    }

    /// Resolves once its request has finished and let go of its slots.
    pub async fn gone(&self) {
        self.stream.control.closed().await;
    }
}

/// One request's place in the registry; dropping it removes the stream.
pub struct StreamHandle {
    stream: Arc<LiveStream>,
    registry: Arc<StreamRegistry>,
    control: watch::Receiver<Control>,
}

impl StreamHandle {
    /// The stream id.
    pub fn id(&self) -> &str {
        &self.stream.id
    }

    /// Marks the stream as holding a slot (no longer queued).
    pub fn admitted(&self) {
        self.stream.queued.store(false, Ordering::Relaxed);
    }

    /// Records the upstream that answered.
    pub fn set_target(&self, name: &str) {
        let _ = self.stream.target.set(name.to_string());
    }

    /// Records the tokens delivered so far.
    pub fn set_tokens(&self, tokens: u64) {
        self.stream.tokens.store(tokens, Ordering::Relaxed);
    }

    /// What the stream is told to do now.
    pub fn current(&self) -> Control {
        self.control.borrow().clone()
    }

    /// Waits for the next change of control and returns it; pends forever
    /// once nobody can send one.
    pub async fn changed(&mut self) -> Control {
        if self.control.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.control.borrow_and_update().clone()
    }

    /// Waits until the stream is told to end, and says why.
    pub async fn ended(&self) -> (EndCause, Option<String>) {
        let mut control = self.control.clone();
        loop {
            if let Control::End { cause, reason } = &*control.borrow_and_update() {
                return (*cause, reason.clone());
            }
            if control.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Marks the stream as ending for `cause` (the client left, the budget
    /// ran out), unless it is ending already.
    pub fn end(&self, cause: EndCause) {
        self.stream.control.send_if_modified(|current| {
            if matches!(current, Control::End { .. }) {
                return false;
            }
            *current = Control::End {
                cause,
                reason: None,
            };
            true
        });
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if let Ok(mut live) = self.registry.live.lock() {
            live.remove(&self.stream.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(tenant: &str, priority: Priority) -> StreamOwner {
        StreamOwner {
            tenant: Some(tenant.to_string()),
            key_id: Some(format!("key-{tenant}")),
            model: "m".to_string(),
            priority,
        }
    }

    #[test]
    fn another_tenants_stream_looks_like_no_stream() {
        let registry = StreamRegistry::new("n1");
        let handle = registry.register("st_a".into(), owner("acme", Priority::Standard), false);
        let acme = Viewer::Tenant(Some("acme".into()));
        let beta = Viewer::Tenant(Some("beta".into()));
        assert!(registry.get("st_a", &acme).is_some());
        assert_eq!(registry.get("st_a", &beta), None);
        assert_eq!(registry.command("st_a", &beta, Command::Cancel, None), None);
        assert_eq!(handle.current(), Control::Run);
        assert_eq!(registry.list(&beta), vec![]);
        assert_eq!(registry.list(&Viewer::Admin).len(), 1);
        drop(handle);
        assert_eq!(registry.get("st_a", &Viewer::Admin), None);
    }

    #[tokio::test]
    async fn pause_resume_and_cancel_reach_the_handle() {
        let registry = StreamRegistry::new("n1");
        let mut handle = registry.register("st_a".into(), owner("acme", Priority::Standard), false);
        let ended = {
            let waiter = registry.register("st_b".into(), owner("acme", Priority::Standard), false);
            registry.command("st_b", &Viewer::Admin, Command::Preempt, Some("vip".into()));
            waiter.ended().await
        };
        assert_eq!(ended, (EndCause::Preempt, Some("vip".into())));
        let admin = Viewer::Admin;
        let view = registry
            .command("st_a", &admin, Command::Pause, None)
            .unwrap();
        assert_eq!(view.state, "paused");
        assert_eq!(handle.changed().await, Control::Pause);
        assert_eq!(registry.counts().paused, 1);
        registry.command("st_a", &admin, Command::Resume, None);
        assert_eq!(handle.changed().await, Control::Run);
        registry.command("st_a", &admin, Command::Cancel, None);
        assert_eq!(handle.ended().await, (EndCause::Api, None));
        // An ending stream stays ended.
        registry.command("st_a", &admin, Command::Resume, None);
        assert!(matches!(
            handle.current(),
            Control::End {
                cause: EndCause::Api,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn preemption_picks_the_lowest_priority_youngest_stream() {
        let registry = StreamRegistry::new("n1");
        let old_batch = registry.register("st_1".into(), owner("acme", Priority::Batch), false);
        let young_batch = registry.register("st_2".into(), owner("acme", Priority::Batch), false);
        let standard = registry.register("st_3".into(), owner("acme", Priority::Standard), false);
        let other = registry.register("st_4".into(), owner("beta", Priority::Batch), false);

        let picked = registry
            .preempt_lowest(Within::Tenant("acme"), Priority::Interactive, "vip")
            .unwrap();
        assert_eq!(picked.id(), "st_2");
        assert!(matches!(
            young_batch.current(),
            Control::End {
                cause: EndCause::Preempt,
                ..
            }
        ));
        // Nothing below `standard` in beta's key but its own batch stream.
        assert_eq!(
            registry
                .preempt_lowest(Within::Key("key-beta"), Priority::Batch, "x")
                .map(|p| p.id().to_string()),
            None
        );
        // Node-wide, a queued stream is passed over: it holds no slot.
        let queued = registry.register("st_5".into(), owner("beta", Priority::Batch), true);
        let node_pick = registry
            .preempt_lowest(Within::Node, Priority::Standard, "full")
            .unwrap();
        assert_eq!(node_pick.id(), "st_4");
        assert_eq!(queued.current(), Control::Run);
        let gone = tokio::spawn(async move { picked.gone().await });
        drop(young_batch);
        gone.await.unwrap();
        assert_eq!(old_batch.current(), Control::Run);
        assert_eq!(standard.current(), Control::Run);
        assert!(matches!(other.current(), Control::End { .. }));
    }

    #[test]
    fn views_survive_the_bus() {
        let registry = StreamRegistry::new("n1");
        let h = registry.register("st_a".into(), owner("acme", Priority::Interactive), true);
        h.set_target("up");
        h.set_tokens(7);
        let view = registry.get("st_a", &Viewer::Admin).unwrap();
        assert_eq!(view.state, "queued");
        assert_eq!(StreamView::from_json(&view.to_json()), Some(view));
        for v in [
            Viewer::Admin,
            Viewer::Tenant(None),
            Viewer::Tenant(Some("a".into())),
        ] {
            assert_eq!(Viewer::from_json(&v.to_json()), Some(v));
        }
    }
}

//! Stream control across nodes, over Redis pub/sub.
//!
//! Every node subscribes to one request channel and to its own reply
//! channel. A control call for a stream this node does not hold is published
//! on the request channel; each other node applies it to its own
//! [`StreamRegistry`] (with the caller's [`Viewer`], so tenant isolation
//! holds across nodes) and answers on the asker's reply channel. `PUBLISH`
//! returns how many nodes listen, so the asker knows how many answers to
//! wait for; a bounded wait covers a node that dies meanwhile. Nothing is
//! written to Redis per request: streams stay in their node's memory.

use crate::streams::{Command, StreamRegistry, StreamView, Viewer};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest wait for other nodes' answers.
const ANSWER_WAIT: Duration = Duration::from_millis(500);
/// Pause before re-subscribing after Redis went away.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);
const REQUESTS: &str = "sluice:streams:requests";

/// Carries control calls to the node that holds a stream.
pub struct StreamBus {
    registry: Arc<StreamRegistry>,
    client: redis::Client,
    publisher: tokio::sync::Mutex<Option<ConnectionManager>>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<StreamView>>>>,
    next_nonce: AtomicU64,
}

impl StreamBus {
    /// A bus over the Redis at `url`; call [`StreamBus::listen`] in a task.
    pub fn new(url: &str, registry: Arc<StreamRegistry>) -> Result<Arc<Self>, redis::RedisError> {
        Ok(Arc::new(StreamBus {
            registry,
            client: redis::Client::open(url)?,
            publisher: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(1),
        }))
    }

    fn reply_channel(node: &str) -> String {
        format!("sluice:streams:reply:{node}")
    }

    /// Serves other nodes' requests and collects their answers, forever;
    /// re-subscribes after Redis comes back.
    pub async fn listen(self: Arc<Self>) {
        let mine = Self::reply_channel(self.registry.node());
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    let subscribed = async {
                        pubsub.subscribe(REQUESTS).await?;
                        pubsub.subscribe(&mine).await
                    }
                    .await;
                    match subscribed {
                        Ok(()) => {
                            tracing::info!("stream control bus subscribed");
                            let mut messages = pubsub.on_message();
                            while let Some(message) = messages.next().await {
                                let Ok(payload) = message.get_payload::<String>() else {
                                    continue;
                                };
                                if message.get_channel_name() == REQUESTS {
                                    self.answer(&payload).await;
                                } else {
                                    self.collect(&payload);
                                }
                            }
                            tracing::warn!("stream control bus lost Redis; re-subscribing");
                        }
                        Err(e) => tracing::warn!(error = %e, "stream control bus cannot subscribe"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "stream control bus cannot reach Redis"),
            }
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
        }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let mut slot = self.publisher.lock().await;
        if slot.is_none() {
            match ConnectionManager::new(self.client.clone()).await {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "stream control bus cannot reach Redis");
                    return None;
                }
            }
        }
        slot.clone()
    }

    async fn publish(&self, channel: &str, payload: String) -> Option<usize> {
        let mut conn = self.connection().await?;
        let sent: redis::RedisResult<usize> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        sent.map_err(|e| tracing::warn!(error = %e, "stream control publish failed"))
            .ok()
    }

    /// Another node's request: apply it here and answer.
    async fn answer(&self, payload: &str) {
        let Ok(request) = serde_json::from_str::<serde_json::Value>(payload) else {
            return;
        };
        let from = request["from"].as_str().unwrap_or_default();
        if from == self.registry.node() || from.is_empty() {
            return;
        }
        let Some(viewer) = Viewer::from_json(&request["viewer"]) else {
            return;
        };
        let streams = match request["op"].as_str() {
            Some("list") => self.registry.list(&viewer),
            Some("command") => {
                let id = request["id"].as_str().unwrap_or_default();
                let found = Command::parse(request["command"].as_str().unwrap_or_default())
                    .and_then(|command| {
                        let reason = request["reason"].as_str().map(str::to_string);
                        self.registry.command(id, &viewer, command, reason)
                    });
                found.into_iter().collect()
            }
            _ => return,
        };
        let reply = json!({
            "nonce": request["nonce"],
            "streams": streams.iter().map(StreamView::to_json).collect::<Vec<_>>(),
        });
        self.publish(&Self::reply_channel(from), reply.to_string())
            .await;
    }

    /// An answer to one of this node's requests.
    fn collect(&self, payload: &str) {
        let Ok(reply) = serde_json::from_str::<serde_json::Value>(payload) else {
            return;
        };
        let Some(nonce) = reply["nonce"].as_u64() else {
            return;
        };
        let streams = reply["streams"]
            .as_array()
            .map(|a| a.iter().filter_map(StreamView::from_json).collect())
            .unwrap_or_default();
        if let Ok(pending) = self.pending.lock() {
            if let Some(tx) = pending.get(&nonce) {
                let _ = tx.send(streams);
            }
        }
    }

    /// Asks every other node; returns their answers, concatenated. With
    /// `first_hit`, stops at the first non-empty answer.
    async fn ask(&self, mut request: serde_json::Value, first_hit: bool) -> Vec<StreamView> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        request["nonce"] = json!(nonce);
        request["from"] = json!(self.registry.node());
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(nonce, tx);
        }
        let listeners = self.publish(REQUESTS, request.to_string()).await;
        // Every node listens, this one included.
        let mut expected = listeners.unwrap_or(0).saturating_sub(1);
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        while expected > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(streams)) => {
                    expected -= 1;
                    let hit = !streams.is_empty();
                    found.extend(streams);
                    if hit && first_hit {
                        break;
                    }
                }
                _ => break,
            }
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&nonce);
        }
        found
    }

    /// Applies `command` to stream `id` on whichever other node holds it.
    pub async fn command(
        &self,
        id: &str,
        viewer: &Viewer,
        command: Command,
        reason: Option<&str>,
    ) -> Option<StreamView> {
        let request = json!({
            "op": "command",
            "id": id,
            "command": command.as_str(),
            "reason": reason,
            "viewer": viewer.to_json(),
        });
        self.ask(request, true).await.into_iter().next()
    }

    /// The streams `viewer` may see on every other node.
    pub async fn list(&self, viewer: &Viewer) -> Vec<StreamView> {
        self.ask(json!({"op": "list", "viewer": viewer.to_json()}), false)
            .await
    }
}

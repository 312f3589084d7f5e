//! The engine's events written as OpenAI answers: a whole
//! `chat.completion` / `text_completion` body, or `chat.completion.chunk`
//! (and completion) SSE events, with a usage chunk when asked and `[DONE]`.

use bytes::Bytes;
use serde_json::{json, Value};
use sluice_batcher::serve::ServedModel;
use sluice_batcher::{Event, Finished, TokenEvent};
use sluice_providers::Endpoint;

/// Writes one answer's pieces in the OpenAI shape of its endpoint.
pub struct ReplyWriter {
    /// `chatcmpl-...` or `cmpl-...`.
    id: String,
    /// The model name the client sees.
    model: String,
    created: i64,
    chat: bool,
    /// Text so far (non-streamed answers are written once, at the end).
    text: String,
    /// Token strings for `logprobs`, when they were asked for.
    logprobs: Option<ServedModel>,
    /// Log-probability entries so far (non-streamed answers).
    entries: Vec<Value>,
}

impl ReplyWriter {
    /// A writer for one answer to `endpoint` from `model`, named `id`;
    /// `logprobs` names tokens when log-probabilities were asked for.
    pub fn new(endpoint: Endpoint, model: &str, id: &str, logprobs: Option<ServedModel>) -> Self {
        let chat = endpoint == Endpoint::ChatCompletions;
        ReplyWriter {
            id: format!("{}-{id}", if chat { "chatcmpl" } else { "cmpl" }),
            model: model.to_string(),
            created: jiff::Timestamp::now().as_second(),
            chat,
            text: String::new(),
            logprobs,
            entries: Vec::new(),
        }
    }

    /// A token's log-probability entry in OpenAI's chat shape, when asked.
    fn entry(&self, token: &TokenEvent) -> Option<Value> {
        let model = self.logprobs.as_ref()?;
        let named = |id: u32, logprob: f32| {
            let text = model.token_text(id);
            json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
        };
        let mut entry = named(token.token, token.logprob.unwrap_or(f32::NEG_INFINITY));
        let top: Vec<Value> = token
            .top_logprobs
            .iter()
            .map(|(id, lp)| named(*id, *lp))
            .collect();
        entry["top_logprobs"] = Value::Array(top);
        Some(entry)
    }

    /// `entries` as the choice's `logprobs` (chat or legacy completions shape).
    fn logprobs_of(&self, entries: &[Value]) -> Value {
        if self.logprobs.is_none() {
            return Value::Null;
        }
        if self.chat {
            return json!({"content": entries, "refusal": null});
        }
        let tokens: Vec<&Value> = entries.iter().map(|e| &e["token"]).collect();
        let logprobs: Vec<&Value> = entries.iter().map(|e| &e["logprob"]).collect();
        let top: Vec<Value> = entries
            .iter()
            .map(|e| {
                let alternatives = e["top_logprobs"].as_array().into_iter().flatten();
                let map: serde_json::Map<String, Value> = alternatives
                    .filter_map(|t| Some((t["token"].as_str()?.to_string(), t["logprob"].clone())))
                    .collect();
                Value::Object(map)
            })
            .collect();
        json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top})
    }

    fn object(&self, streamed: bool) -> &'static str {
        match (self.chat, streamed) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn chunk(&self, choice: Value) -> Bytes {
        let chunk = json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": [choice],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// The first SSE event of a chat stream: the assistant's role.
    pub fn opening(&self) -> Option<Bytes> {
        self.chat.then(|| {
            self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}),
            )
        })
    }

    /// An SSE event for `token`, or nothing for a token with no text and
    /// no log-probabilities asked for.
    pub fn token_delta(&self, token: &TokenEvent) -> Option<Bytes> {
        let entry = self.entry(token);
        if token.text.is_empty() && entry.is_none() {
            return None;
        }
        let logprobs = self.logprobs_of(&entry.into_iter().collect::<Vec<_>>());
        Some(self.text_chunk(&token.text, logprobs))
    }

    /// An SSE event for `text`, or nothing for empty text.
    pub fn delta(&self, text: &str) -> Option<Bytes> {
        (!text.is_empty()).then(|| self.text_chunk(text, Value::Null))
    }

    fn text_chunk(&self, text: &str, logprobs: Value) -> Bytes {
        if self.chat {
            self.chunk(json!({"index": 0, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": null}))
        } else {
            self.chunk(
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": null}),
            )
        }
    }

    /// The SSE events that end a stream: trailing text, the finish reason,
    /// the usage chunk when asked, `[DONE]`.
    pub fn closing(&self, done: &Finished, include_usage: bool) -> Bytes {
        let mut out = Vec::new();
        if let Some(rest) = self.delta(&done.trailing_text) {
            out.extend_from_slice(&rest);
        }
        let reason = done.reason.as_openai();
        let last = if self.chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})
        };
        out.extend_from_slice(&self.chunk(last));
        if include_usage {
            let usage = json!({
                "id": self.id, "object": self.object(true), "created": self.created,
                "model": self.model, "system_fingerprint": null, "choices": [],
                "usage": usage(done),
            });
            out.extend_from_slice(format!("data: {usage}\n\n").as_bytes());
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    /// Collects a token for a non-streamed answer.
    pub fn push(&mut self, token: &TokenEvent) {
        self.text.push_str(&token.text);
        if let Some(entry) = self.entry(token) {
            self.entries.push(entry);
        }
    }

    /// The whole non-streamed answer.
    pub fn whole(&mut self, done: &Finished) -> Bytes {
        self.text.push_str(&done.trailing_text);
        let reason = done.reason.as_openai();
        let logprobs = self.logprobs_of(&self.entries);
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": self.text, "refusal": null},
                "logprobs": logprobs, "finish_reason": reason})
        } else {
            json!({"index": 0, "text": self.text, "logprobs": logprobs, "finish_reason": reason})
        };
        let body = json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": [choice],
            "usage": usage(done),
        });
        Bytes::from(body.to_string())
    }
}

fn usage(done: &Finished) -> Value {
    json!({
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    })
}

/// What one engine event means for the answer.
pub enum Step {
    /// A token: its text to send (possibly empty) and its log-probabilities
    /// when they were asked for.
    Token(TokenEvent),
    /// The end, with usage.
    Done(Finished),
    /// The engine failed (the message is for logs).
    Failed(String),
}

impl From<Event> for Step {
    fn from(event: Event) -> Self {
        match event {
            Event::Token(t) => Step::Token(t),
            Event::Finished(f) => Step::Done(f),
            Event::Error(e) => Step::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_batcher::FinishReason;
    use std::time::Duration;

    fn finished() -> Finished {
        Finished {
            reason: FinishReason::Length,
            trailing_text: "!".into(),
            prompt_tokens: 5,
            completion_tokens: 3,
            preemptions: 0,
            time_to_first_token: None,
            total_time: Duration::from_millis(1),
        }
    }

    fn token(text: &str) -> TokenEvent {
        TokenEvent {
            index: 0,
            token: 1,
            text: text.into(),
            logprob: None,
            top_logprobs: Vec::new(),
        }
    }

    fn events(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn a_chat_stream_has_openais_chunks_and_usage() {
        let w = ReplyWriter::new(Endpoint::ChatCompletions, "m", "x", None);
        let opening = events(&w.opening().unwrap());
        assert_eq!(opening[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(w.delta("").is_none());
        let delta = events(&w.delta("hi").unwrap());
        assert_eq!(delta[0]["object"], "chat.completion.chunk");
        assert_eq!(delta[0]["choices"][0]["delta"]["content"], "hi");
        let closing = w.closing(&finished(), true);
        assert!(closing.ends_with(b"data: [DONE]\n\n"));
        let closing = events(&closing);
        assert_eq!(closing[0]["choices"][0]["delta"]["content"], "!");
        assert_eq!(closing[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(closing[2]["usage"]["total_tokens"], 8);
        assert_eq!(closing[2]["choices"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_whole_completion_carries_text_and_usage() {
        let mut w = ReplyWriter::new(Endpoint::Completions, "m", "x", None);
        w.push(&token("a"));
        w.push(&token("b"));
        let body: Value = serde_json::from_slice(&w.whole(&finished())).unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "ab!");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
        assert_eq!(body["id"], "cmpl-x");
    }
}

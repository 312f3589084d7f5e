//! The engine's events written as OpenAI answers: a whole
//! `chat.completion` / `text_completion` body, or `chat.completion.chunk`
//! (and completion) SSE events, one `index` per choice (`n`), with a usage
//! chunk when asked and `[DONE]`.

use bytes::Bytes;
use serde_json::{json, Value};
use sluice_batcher::serve::ServedModel;
use sluice_batcher::{Event, Finished, TokenEvent};
use sluice_providers::Endpoint;

/// What one choice has produced so far (non-streamed answers are written
/// once, at the end).
#[derive(Default)]
struct Choice {
    text: String,
    /// Log-probability entries, when asked for.
    entries: Vec<Value>,
    finish_reason: Option<&'static str>,
}

/// Writes one answer's pieces in the OpenAI shape of its endpoint.
pub struct ReplyWriter {
    /// `chatcmpl-...` or `cmpl-...`.
    id: String,
    /// The model name the client sees.
    model: String,
    created: i64,
    chat: bool,
    /// Token strings for `logprobs`, when they were asked for.
    logprobs: Option<ServedModel>,
    choices: Vec<Choice>,
    /// The prompt's tokens (counted once for all choices).
    prompt_tokens: usize,
    /// Generated tokens, all choices together.
    completion_tokens: usize,
}

impl ReplyWriter {
    /// A writer for one answer of `n` choices to `endpoint` from `model`,
    /// named `id`; `logprobs` names tokens when log-probabilities were asked for.
    pub fn new(
        endpoint: Endpoint,
        model: &str,
        id: &str,
        logprobs: Option<ServedModel>,
        n: usize,
    ) -> Self {
        let chat = endpoint == Endpoint::ChatCompletions;
        ReplyWriter {
            id: format!("{}-{id}", if chat { "chatcmpl" } else { "cmpl" }),
            model: model.to_string(),
            created: jiff::Timestamp::now().as_second(),
            chat,
            logprobs,
            choices: (0..n.max(1)).map(|_| Choice::default()).collect(),
            prompt_tokens: 0,
            completion_tokens: 0,
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

    /// The first SSE event of choice `index` of a chat stream: the role.
    pub fn opening(&self, index: usize) -> Option<Bytes> {
        self.chat.then(|| {
            self.chunk(
                json!({"index": index, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}),
            )
        })
    }

    /// An SSE event for `token` of choice `index`, or nothing for a token
    /// with no text and no log-probabilities asked for.
    pub fn token_delta(&self, index: usize, token: &TokenEvent) -> Option<Bytes> {
        let entry = self.entry(token);
        if token.text.is_empty() && entry.is_none() {
            return None;
        }
        let logprobs = self.logprobs_of(&entry.into_iter().collect::<Vec<_>>());
        Some(self.text_chunk(index, &token.text, logprobs))
    }

    fn text_chunk(&self, index: usize, text: &str, logprobs: Value) -> Bytes {
        if self.chat {
            self.chunk(json!({"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": null}))
        } else {
            self.chunk(
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": null}),
            )
        }
    }

    /// Counts a finished choice's usage and remembers how it ended.
    fn count(&mut self, index: usize, done: &Finished) {
        self.prompt_tokens = self.prompt_tokens.max(done.prompt_tokens);
        self.completion_tokens += done.completion_tokens;
        if let Some(choice) = self.choices.get_mut(index) {
            choice.finish_reason = Some(done.reason.as_openai());
        }
    }

    /// The SSE events that end choice `index`: its trailing text, then its
    /// finish reason.
    pub fn choice_end(&mut self, index: usize, done: &Finished) -> Bytes {
        self.count(index, done);
        let mut out = Vec::new();
        if !done.trailing_text.is_empty() {
            out.extend_from_slice(&self.text_chunk(index, &done.trailing_text, Value::Null));
        }
        let reason = done.reason.as_openai();
        let last = if self.chat {
            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
        } else {
            json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason})
        };
        out.extend_from_slice(&self.chunk(last));
        Bytes::from(out)
    }

    /// The SSE events after every choice ended: the usage chunk when asked,
    /// then `[DONE]`.
    pub fn stream_end(&self, include_usage: bool) -> Bytes {
        let mut out = Vec::new();
        if include_usage {
            let usage = json!({
                "id": self.id, "object": self.object(true), "created": self.created,
                "model": self.model, "system_fingerprint": null, "choices": [],
                "usage": self.usage(),
            });
            out.extend_from_slice(format!("data: {usage}\n\n").as_bytes());
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    /// Collects a token of choice `index` for a non-streamed answer.
    pub fn push(&mut self, index: usize, token: &TokenEvent) {
        let entry = self.entry(token);
        if let Some(choice) = self.choices.get_mut(index) {
            choice.text.push_str(&token.text);
            choice.entries.extend(entry);
        }
    }

    /// Records the end of choice `index` of a non-streamed answer.
    pub fn push_end(&mut self, index: usize, done: &Finished) {
        self.count(index, done);
        if let Some(choice) = self.choices.get_mut(index) {
            choice.text.push_str(&done.trailing_text);
        }
    }

    /// The whole non-streamed answer.
    pub fn whole(&self) -> Bytes {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let logprobs = self.logprobs_of(&c.entries);
                if self.chat {
                    json!({"index": index, "message": {"role": "assistant", "content": c.text, "refusal": null},
                        "logprobs": logprobs, "finish_reason": c.finish_reason})
                } else {
                    json!({"index": index, "text": c.text, "logprobs": logprobs, "finish_reason": c.finish_reason})
                }
            })
            .collect();
        let body = json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "system_fingerprint": null, "choices": choices,
            "usage": self.usage(),
        });
        Bytes::from(body.to_string())
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
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
        let mut w = ReplyWriter::new(Endpoint::ChatCompletions, "m", "x", None, 2);
        let opening = events(&w.opening(1).unwrap());
        assert_eq!(opening[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(opening[0]["choices"][0]["index"], 1);
        assert!(w.token_delta(0, &token("")).is_none());
        let delta = events(&w.token_delta(0, &token("hi")).unwrap());
        assert_eq!(delta[0]["object"], "chat.completion.chunk");
        assert_eq!(delta[0]["choices"][0]["delta"]["content"], "hi");
        let end = events(&w.choice_end(0, &finished()));
        assert_eq!(end[0]["choices"][0]["delta"]["content"], "!");
        assert_eq!(end[1]["choices"][0]["finish_reason"], "length");
        w.choice_end(1, &finished());
        let closing = w.stream_end(true);
        assert!(closing.ends_with(b"data: [DONE]\n\n"));
        let closing = events(&closing);
        // The prompt counts once, the completions of both choices add up.
        assert_eq!(closing[0]["usage"]["total_tokens"], 5 + 3 + 3);
        assert_eq!(closing[0]["choices"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn a_whole_completion_carries_text_and_usage() {
        let mut w = ReplyWriter::new(Endpoint::Completions, "m", "x", None, 1);
        w.push(0, &token("a"));
        w.push(0, &token("b"));
        w.push_end(0, &finished());
        let body: Value = serde_json::from_slice(&w.whole()).unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "ab!");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
        assert_eq!(body["id"], "cmpl-x");
    }
}

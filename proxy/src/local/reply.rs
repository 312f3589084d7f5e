//! The engine's events written as OpenAI answers: a whole
//! `chat.completion` / `text_completion` body, or `chat.completion.chunk`
//! (and completion) SSE events, with a usage chunk when asked and `[DONE]`.

use bytes::Bytes;
use serde_json::{json, Value};
use sluice_batcher::{Event, Finished};
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
}

impl ReplyWriter {
    /// A writer for one answer to `endpoint` from `model`, named `id`.
    pub fn new(endpoint: Endpoint, model: &str, id: &str) -> Self {
        let chat = endpoint == Endpoint::ChatCompletions;
        ReplyWriter {
            id: format!("{}-{id}", if chat { "chatcmpl" } else { "cmpl" }),
            model: model.to_string(),
            created: jiff::Timestamp::now().as_second(),
            chat,
            text: String::new(),
        }
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

    /// An SSE event for `text`, or nothing for empty text.
    pub fn delta(&self, text: &str) -> Option<Bytes> {
        if text.is_empty() {
            return None;
        }
        Some(if self.chat {
            self.chunk(json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}))
        } else {
            self.chunk(json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null}))
        })
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

    /// Collects text for a non-streamed answer.
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// The whole non-streamed answer.
    pub fn whole(&mut self, done: &Finished) -> Bytes {
        self.text.push_str(&done.trailing_text);
        let reason = done.reason.as_openai();
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": self.text, "refusal": null},
                "logprobs": null, "finish_reason": reason})
        } else {
            json!({"index": 0, "text": self.text, "logprobs": null, "finish_reason": reason})
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
    /// Text to send (possibly empty).
    Text(String),
    /// The end, with usage.
    Done(Finished),
    /// The engine failed (the message is for logs).
    Failed(String),
}

impl From<Event> for Step {
    fn from(event: Event) -> Self {
        match event {
            Event::Token(t) => Step::Text(t.text),
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
        let w = ReplyWriter::new(Endpoint::ChatCompletions, "m", "x");
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
        let mut w = ReplyWriter::new(Endpoint::Completions, "m", "x");
        w.push("a");
        w.push("b");
        let body: Value = serde_json::from_slice(&w.whole(&finished())).unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "ab!");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
        assert_eq!(body["id"], "cmpl-x");
    }
}

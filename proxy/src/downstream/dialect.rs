//! Client dialects: how a request is read and how answers, closing chunks
//! and errors are written back in the shape the caller's SDK expects.
//! OpenAI's chat completions, completions and embeddings are the first
//! dialect; Anthropic's Messages and OpenAI's Responses API are converted
//! to and from chat by `sluice_providers::dialects` (one module each).

use crate::error::GatewayError;
use bytes::Bytes;
use sluice_filters::EndCause;
use sluice_providers::dialects::{messages, responses, ClientDialect};
use sluice_providers::ResponseTranslator;

/// The shape a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// OpenAI's `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    #[default]
    OpenAi,
    /// Anthropic's `/v1/messages` (and `/v1/messages/count_tokens`).
    Messages,
    /// OpenAI's `/v1/responses`.
    Responses,
}

/// Why sluice itself ends a running stream, and how it says so.
pub enum StreamEnd<'a> {
    /// Stopped by its controls (API cancel, preemption, pause limit): a last
    /// chunk with `finish_reason: "stop"`, then a `sluice` notice saying why.
    Stopped {
        /// The stream's id.
        stream_id: &'a str,
        /// Who stopped it.
        cause: EndCause,
        /// The reason given with a preemption.
        reason: Option<&'a str>,
    },
    /// Cut at its hard budget: a last chunk with `finish_reason: "length"`,
    /// then OpenAI's `insufficient_quota` error event.
    BudgetCut {
        /// What it had cost when it was cut, in micro-dollars.
        spent_micros: i64,
    },
}

impl Dialect {
    /// The converted dialect, when not OpenAI's own.
    pub fn client(self) -> Option<ClientDialect> {
        match self {
            Dialect::OpenAi => None,
            Dialect::Messages => Some(ClientDialect::Messages),
            Dialect::Responses => Some(ClientDialect::Responses),
        }
    }

    /// What begins the end of a completed stream in this dialect: under
    /// strict durability it and all after it wait for the record.
    pub fn stream_end_marker(self) -> &'static [u8] {
        match self {
            Dialect::OpenAi => b"data: [DONE]",
            Dialect::Messages => b"event: message_stop",
            Dialect::Responses => b"event: response.completed",
        }
    }

    /// `error` as this dialect's JSON error body: Anthropic's
    /// `{"type":"error","error":{"type","message"}}` on `/v1/messages`,
    /// OpenAI's everywhere else (the Responses API uses OpenAI's too).
    pub fn error_body(self, error: &GatewayError) -> Bytes {
        match self {
            Dialect::Messages => messages::error_body(error.status(), &error.to_string()),
            Dialect::OpenAi | Dialect::Responses => error.body(),
        }
    }

    /// The SSE events that end a stream sluice stops itself, in the
    /// client's dialect (OpenAI's: `[DONE]` last). One builder for every
    /// such end, so they can never disagree. `translator` is the running
    /// reply's: a converted dialect's writer closes what it opened.
    pub fn closing_events(
        self,
        end: &StreamEnd<'_>,
        id: &str,
        model: &str,
        translator: &mut ResponseTranslator,
    ) -> Bytes {
        if self == Dialect::OpenAi {
            return self.openai_closing_events(end, id, model);
        }
        let cut = matches!(end, StreamEnd::BudgetCut { .. });
        let mut out = match translator.close_rewritten(cut) {
            Some(closing) => closing.to_vec(),
            // A native reply relayed untouched: nothing of ours is open.
            None => Vec::new(),
        };
        let error = match end {
            StreamEnd::BudgetCut { spent_micros } => Some(budget_cut_error(*spent_micros)),
            // A native Messages stream stopped by its controls ends with
            // the error event (its blocks are the upstream's to close).
            StreamEnd::Stopped { cause, reason, .. } if out.is_empty() => {
                Some(GatewayError::Ended {
                    cause: *cause,
                    reason: reason.map(str::to_string),
                })
            }
            StreamEnd::Stopped { .. } => None,
        };
        if let Some(error) = error {
            out.extend_from_slice(&self.error_event(&error));
        }
        Bytes::from(out)
    }

    fn openai_closing_events(self, end: &StreamEnd<'_>, id: &str, model: &str) -> Bytes {
        let created = jiff::Timestamp::now().as_second();
        let chunk = |choices: serde_json::Value| {
            serde_json::json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            })
        };
        let last = |finish_reason: &str| {
            chunk(serde_json::json!([
                {"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason}
            ]))
        };
        let mut out = String::new();
        match end {
            StreamEnd::Stopped {
                stream_id,
                cause,
                reason,
            } => {
                let event = if *cause == EndCause::Preempt {
                    "stream.preempted"
                } else {
                    "stream.cancelled"
                };
                let mut notice = chunk(serde_json::json!([]));
                notice["sluice"] = serde_json::json!({
                    "event": event, "stream_id": stream_id, "cause": cause.label(), "reason": reason,
                });
                out.push_str(&format!(
                    "data: {}\n\ndata: {notice}\n\ndata: [DONE]\n\n",
                    last("stop")
                ));
                Bytes::from(out)
            }
            StreamEnd::BudgetCut { spent_micros } => {
                out.push_str(&format!("data: {}\n\n", last("length")));
                let error = budget_cut_error(*spent_micros);
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&self.error_event(&error));
                Bytes::from(bytes)
            }
        }
    }

    /// `error` as the SSE event that ends a stream whose headers are sent,
    /// in the client's dialect; the same message a plain answer would carry.
    pub fn error_event(self, error: &GatewayError) -> Bytes {
        match self {
            Dialect::OpenAi => error.sse_event(),
            Dialect::Messages => messages::error_event(error.status(), &error.to_string()),
            Dialect::Responses => responses::error_event(
                error.status(),
                error.code().unwrap_or("server_error"),
                &error.to_string(),
            ),
        }
    }
}

/// The error that ends a stream cut at its hard budget.
fn budget_cut_error(spent_micros: i64) -> GatewayError {
    GatewayError::Budget(sluice_filters::BudgetRejection {
        scope_kind: sluice_filters::ScopeKind::Request,
        limit_micros: spent_micros,
        spent_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &Bytes) -> Vec<serde_json::Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn a_stopped_stream_ends_with_stop_then_a_notice_then_done() {
        let end = StreamEnd::Stopped {
            stream_id: "st_1",
            cause: EndCause::Preempt,
            reason: Some("room for interactive"),
        };
        let bytes = Dialect::OpenAi.openai_closing_events(&end, "chatcmpl-st_1", "m");
        assert!(bytes.ends_with(b"data: [DONE]\n\n"));
        let events = events(&bytes);
        assert_eq!(events[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[0]["id"], "chatcmpl-st_1");
        assert_eq!(events[1]["choices"].as_array().unwrap().len(), 0);
        assert_eq!(events[1]["sluice"]["event"], "stream.preempted");
        assert_eq!(events[1]["sluice"]["reason"], "room for interactive");
    }

    #[test]
    fn a_budget_cut_ends_with_length_then_insufficient_quota() {
        let end = StreamEnd::BudgetCut { spent_micros: 1500 };
        let bytes = Dialect::OpenAi.openai_closing_events(&end, "chatcmpl-sluice-budget-cut", "m");
        assert!(bytes.ends_with(b"data: [DONE]\n\n"));
        let events = events(&bytes);
        assert_eq!(events[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(events[1]["error"]["code"], "insufficient_quota");
    }
}

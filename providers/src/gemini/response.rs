//! Replies read whole: a 2xx `generateContent` or `batchEmbedContents`
//! response in OpenAI's shape, and an error body classified. The types and
//! readings here serve the stream too (each of its events is a whole
//! `GenerateContentResponse`).

use crate::chunk::{now_s, Completion, FinishReason, ToolCallOut};
use crate::wire::ReplyContext;
use crate::{Endpoint, UpstreamError, UpstreamErrorKind, Usage};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};

/// A `generateContent` reply, and each event of a stream.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
    /// An error sent as a stream event.
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

/// One candidate answer (sluice reads the first).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate {
    #[serde(default)]
    pub content: Option<CandidateContent>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A candidate's content.
#[derive(Deserialize)]
pub(super) struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<RespPart>,
}

/// One part of a candidate: text, a thought, or a function call.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RespPart {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<RespCall>,
}

/// A function call, with an id only when Gemini gives one.
#[derive(Deserialize)]
pub(super) struct RespCall {
    pub name: String,
    #[serde(default)]
    pub args: Option<Box<RawValue>>,
    #[serde(default)]
    pub id: Option<String>,
}

/// Why the prompt was blocked, if it was.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

/// Gemini's usage report.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<UsageMetadata> for Usage {
    fn from(u: UsageMetadata) -> Self {
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: u.candidates_token_count + u.thoughts_token_count,
            cached_prompt_tokens: u.cached_content_token_count,
            cache_write_tokens: 0,
        }
    }
}

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// An id for a call Gemini did not name.
pub(super) fn call_id(given: Option<String>) -> String {
    given.filter(|id| !id.is_empty()).unwrap_or_else(|| {
        format!(
            "call_{:x}{:04x}",
            now_s(),
            NEXT_CALL.fetch_add(1, Ordering::Relaxed)
        )
    })
}

/// OpenAI's finish reason for Gemini's `reason` (`has_calls`: the reply holds function calls).
pub(super) fn finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// A reply that cannot be read.
fn unreadable() -> UpstreamError {
    UpstreamError::new(UpstreamErrorKind::Server, None)
}

/// A whole 2xx reply (chat or embeddings), in OpenAI's shape, with its usage.
pub(super) fn response(
    reply: &ReplyContext,
    body: &[u8],
) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    if reply.endpoint == Endpoint::Embeddings {
        return embeddings(reply, body);
    }
    let r: GenerateResponse = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let usage = r.usage_metadata.map(Usage::from);
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut finish = None;
    if let Some(c) = r.candidates.into_iter().next() {
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = part.text {
                content.push_str(&text);
            }
            if let Some(call) = part.function_call {
                tool_calls.push(ToolCallOut {
                    id: call_id(call.id),
                    name: call.name,
                    arguments: call
                        .args
                        .map_or_else(|| "{}".into(), |a| a.get().to_string()),
                });
            }
        }
        finish = c.finish_reason;
    }
    let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
    let finish = match finish {
        _ if blocked => FinishReason::ContentFilter,
        Some(f) => finish_reason(&f, !tool_calls.is_empty()),
        None => finish_reason("STOP", !tool_calls.is_empty()),
    };
    let completion = Completion {
        id: r.response_id,
        model: r.model_version,
        content,
        tool_calls,
        finish,
        usage: usage.unwrap_or_default(),
    };
    Ok((Bytes::from(completion.to_openai(&reply.model)), usage))
}

/// A whole `batchEmbedContents` reply, as OpenAI's embeddings list.
fn embeddings(reply: &ReplyContext, body: &[u8]) -> Result<(Bytes, Option<Usage>), UpstreamError> {
    #[derive(Deserialize)]
    struct Batch {
        #[serde(default)]
        embeddings: Vec<Values>,
    }
    #[derive(Deserialize)]
    struct Values {
        values: Box<RawValue>,
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, e) in batch.embeddings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(b",\"embedding\":");
        out.extend_from_slice(e.values.get().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    serde_json::to_writer(&mut out, &reply.model).map_err(|_| unreadable())?;
    // Gemini reports no usage for embeddings: the gateway counts them.
    out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":0,\"total_tokens\":0}}");
    Ok((Bytes::from(out), None))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

/// An error's fields, in an error body or a stream event.
#[derive(Deserialize)]
pub(super) struct ErrorDetail {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl ErrorDetail {
    /// The error, classified by its `status` (else `code`, else `http_status`).
    pub(super) fn into_error(self, http_status: u16) -> UpstreamError {
        let key_invalid = self
            .details
            .iter()
            .any(|d| d.get("reason").and_then(|r| r.as_str()) == Some("API_KEY_INVALID"));
        let kind = match self.status.as_str() {
            _ if key_invalid => UpstreamErrorKind::Auth,
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
                UpstreamErrorKind::BadRequest
            }
            "UNAUTHENTICATED" | "PERMISSION_DENIED" => UpstreamErrorKind::Auth,
            "NOT_FOUND" => UpstreamErrorKind::NotFound,
            "RESOURCE_EXHAUSTED" => UpstreamErrorKind::RateLimited,
            "UNAVAILABLE" => UpstreamErrorKind::Overloaded,
            "DEADLINE_EXCEEDED" => UpstreamErrorKind::Timeout,
            "INTERNAL" => UpstreamErrorKind::Server,
            _ => UpstreamErrorKind::from_status(self.code.unwrap_or(http_status)),
        };
        UpstreamError::new(kind, Some(&self.message))
    }
}

/// An error reply (`{"error":{"code","message","status"}}`).
pub(super) fn error(status: u16, body: &[u8]) -> UpstreamError {
    // Gemini sometimes wraps the error in a one-element array.
    // (Checked first: serde would read an array as a struct's fields.)
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let parsed = if is_array {
        serde_json::from_slice::<Vec<ErrorBody>>(body)
            .map_err(|_| ())
            .and_then(|v| v.into_iter().next().ok_or(()))
    } else {
        serde_json::from_slice::<ErrorBody>(body).map_err(|_| ())
    };
    match parsed {
        Ok(b) => b.error.into_error(status),
        Err(_) => UpstreamError::new(UpstreamErrorKind::from_status(status), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn safety_blocks_are_content_filter_and_usage_is_read() {
        let reply = ReplyContext {
            endpoint: Endpoint::ChatCompletions,
            stream: false,
            include_usage: false,
            strip_usage_chunk: false,
            model: "gemini".into(),
        };
        let body = br#"{"candidates":[{"finishReason":"SAFETY","index":0}],
            "usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":0,"cachedContentTokenCount":3,"thoughtsTokenCount":2}}"#;
        let (out, usage) = response(&reply, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                cached_prompt_tokens: 3,
                cache_write_tokens: 0,
            })
        );
    }

    #[test]
    fn invalid_keys_are_auth_failures() {
        let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let e = error(400, body);
        assert_eq!(e.kind, UpstreamErrorKind::Auth);
        let e = error(
            429,
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.status(), 429);
        assert_eq!(e.message, "Quota exceeded");
    }
}

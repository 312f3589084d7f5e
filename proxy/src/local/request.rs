//! An OpenAI request read for the built-in engine: the prompt (chat
//! messages through the model's template, or a plain completion prompt) and
//! the sampling settings. Anything the engine cannot honour is refused with
//! a 400 naming the field, never silently dropped.

use serde_json::Value;
use sluice_batcher::serve::{PromptError, ServedModel};
use sluice_batcher::SamplingParams;
use sluice_providers::Endpoint;

/// A request the engine can run.
pub struct EngineRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling and stopping.
    pub sampling: SamplingParams,
    /// Streamed as SSE?
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
}

/// Why a request was refused: the client's answer, a 400 (or a 500 when
/// the model itself failed).
#[derive(Debug)]
pub struct Refusal {
    /// 400, or 500 for a model failure.
    pub status: u16,
    /// Safe to show the client.
    pub message: String,
    /// The field at fault, when one is.
    pub param: Option<&'static str>,
    /// OpenAI-style code.
    pub code: &'static str,
}

impl Refusal {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status: 400,
            message: message.into(),
            param: Some(param),
            code: "invalid_value",
        }
    }

    /// OpenAI's error body.
    pub fn body(&self) -> Value {
        let kind = if self.status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        serde_json::json!({"error": {
            "message": self.message, "type": kind, "param": self.param, "code": self.code,
        }})
    }
}

impl From<PromptError> for Refusal {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::Model(inner) => {
                tracing::error!(error = %inner, "the local model could not build a prompt");
                Refusal {
                    status: 500,
                    message: "The model could not read the prompt.".into(),
                    param: None,
                    code: "internal_error",
                }
            }
            PromptError::TooLong { .. } => Refusal {
                status: 400,
                message: e.to_string(),
                param: Some("messages"),
                code: "context_length_exceeded",
            },
            other => Refusal {
                status: 400,
                message: other.to_string(),
                param: Some("messages"),
                code: "unsupported_content",
            },
        }
    }
}

/// Reads `body` (as the target's adapter built it) for `model`.
pub fn read(
    endpoint: Endpoint,
    body: &[u8],
    model: &ServedModel,
) -> Result<EngineRequest, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::invalid("body", format!("The body is not JSON: {e}")))?;
    let prompt = match endpoint {
        Endpoint::ChatCompletions => {
            let messages = v
                .get("messages")
                .filter(|m| m.is_array())
                .ok_or_else(|| Refusal::invalid("messages", "messages must be an array"))?;
            model.chat_prompt(messages, v.get("tools"))?
        }
        Endpoint::Completions => match v.get("prompt") {
            Some(Value::String(text)) => model.text_prompt(text)?,
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                model.text_prompt(items[0].as_str().unwrap_or_default())?
            }
            _ => return Err(Refusal::invalid("prompt", "prompt must be one string")),
        },
        Endpoint::Embeddings => {
            return Err(Refusal {
                status: 400,
                message: "The built-in engine serves chat and completions, not embeddings.".into(),
                param: Some("model"),
                code: "unsupported_endpoint",
            })
        }
    };
    if v.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(Refusal::invalid(
            "n",
            "the built-in engine answers with n = 1 only",
        ));
    }
    let room = model.context_tokens().saturating_sub(prompt.len());
    let asked = v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
        .and_then(Value::as_u64);
    let max_tokens = match asked {
        Some(0) => {
            return Err(Refusal::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ))
        }
        Some(n) => (n as usize).min(room),
        None => room,
    };
    let number = |key: &str, default: f32| -> Result<f32, Refusal> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().map(|f| f as f32).ok_or_else(|| {
                Refusal::invalid(static_name(key), format!("{key} must be a number"))
            }),
        }
    };
    let stop = match v.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Refusal::invalid("stop", "stop must be a string or strings"))?,
        Some(_) => return Err(Refusal::invalid("stop", "stop must be a string or strings")),
    };
    let sampling = SamplingParams {
        temperature: number("temperature", 1.0)?,
        top_p: number("top_p", 1.0)?,
        top_k: v.get("top_k").and_then(Value::as_u64).unwrap_or(0) as usize,
        seed: v
            .get("seed")
            .and_then(Value::as_u64)
            .unwrap_or_else(rand::random),
        frequency_penalty: number("frequency_penalty", 0.0)?,
        presence_penalty: number("presence_penalty", 0.0)?,
        max_tokens,
        stop,
        // vLLM's extension: keep going past the end-of-sequence token.
        ignore_eos: v
            .get("ignore_eos")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..SamplingParams::greedy(max_tokens)
    };
    sampling.validate().map_err(|e| {
        let message = e.to_string();
        let field = message.split_whitespace().next().unwrap_or("body");
        Refusal::invalid(static_name(field), message)
    })?;
    Ok(EngineRequest {
        prompt,
        sampling,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The parameter names refusals may name (they outlive the request).
fn static_name(key: &str) -> &'static str {
    match key {
        "temperature" => "temperature",
        "top_p" => "top_p",
        "frequency_penalty" => "frequency_penalty",
        "presence_penalty" => "presence_penalty",
        "repetition_penalty" => "repetition_penalty",
        "max_tokens" => "max_tokens",
        "stop" => "stop",
        _ => "body",
    }
}

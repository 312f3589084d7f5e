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
    /// Report log-probabilities.
    pub logprobs: bool,
    /// Choices to generate (`n`), each its own sequence.
    pub n: usize,
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
    let prompt = prompt_of(endpoint, &v, model)?;
    let n = match v.get("n") {
        None | Some(Value::Null) => 1,
        Some(n) => match n.as_u64() {
            Some(n @ 1..=MAX_N) => n as usize,
            _ => {
                let why = format!("n must be a whole number from 1 to {MAX_N}");
                return Err(Refusal::invalid("n", why));
            }
        },
    };
    let room = model.context_tokens().saturating_sub(prompt.len());
    let top = logprobs_of(endpoint, &v)?;
    let mut sampling = sampling_of(&v, room)?;
    sampling.logprobs = top;
    Ok(EngineRequest {
        prompt,
        sampling,
        logprobs: top.is_some(),
        n,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Most choices (`n`) one request may ask the engine for.
const MAX_N: u64 = 8;

/// Most alternatives per token OpenAI allows in `top_logprobs`.
const MAX_TOP_LOGPROBS: u64 = 20;

/// How many alternatives to report per token, when log-probabilities are
/// asked for: chat's `logprobs: true` + `top_logprobs: N`, or the legacy
/// completions' `logprobs: N`.
fn logprobs_of(endpoint: Endpoint, v: &Value) -> Result<Option<usize>, Refusal> {
    let top = match endpoint {
        Endpoint::ChatCompletions => {
            let wanted = v.get("logprobs").and_then(Value::as_bool).unwrap_or(false);
            let top = v.get("top_logprobs").and_then(Value::as_u64);
            match (wanted, top) {
                (false, Some(_)) => {
                    return Err(Refusal::invalid(
                        "top_logprobs",
                        "top_logprobs needs logprobs: true",
                    ))
                }
                (false, None) => return Ok(None),
                (true, top) => top.unwrap_or(0),
            }
        }
        _ => match v.get("logprobs").and_then(Value::as_u64) {
            None => return Ok(None),
            Some(n) => n,
        },
    };
    if top > MAX_TOP_LOGPROBS {
        let param = if endpoint == Endpoint::ChatCompletions {
            "top_logprobs"
        } else {
            "logprobs"
        };
        return Err(Refusal::invalid(
            param,
            format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
        ));
    }
    Ok(Some(top as usize))
}

/// The prompt's token ids: chat messages through the model's template, or
/// a completion's one prompt string.
fn prompt_of(endpoint: Endpoint, v: &Value, model: &ServedModel) -> Result<Vec<u32>, Refusal> {
    match endpoint {
        Endpoint::ChatCompletions => {
            let messages = v
                .get("messages")
                .filter(|m| m.is_array())
                .ok_or_else(|| Refusal::invalid("messages", "messages must be an array"))?;
            Ok(model.chat_prompt(messages, v.get("tools"))?)
        }
        Endpoint::Completions => match v.get("prompt") {
            Some(Value::String(text)) => Ok(model.text_prompt(text)?),
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                Ok(model.text_prompt(items[0].as_str().unwrap_or_default())?)
            }
            _ => Err(Refusal::invalid("prompt", "prompt must be one string")),
        },
        Endpoint::Embeddings => Err(Refusal {
            status: 400,
            message: "The built-in engine serves chat and completions, not embeddings.".into(),
            param: Some("model"),
            code: "unsupported_endpoint",
        }),
    }
}

/// Sampling and stopping as asked; `room` is what the context has left,
/// and the default `max_tokens`.
fn sampling_of(v: &Value, room: usize) -> Result<SamplingParams, Refusal> {
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
    let number = |key: &'static str, default: f32| -> Result<f32, Refusal> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| Refusal::invalid(key, format!("{key} must be a number"))),
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
        // Random when absent: two unseeded requests should not answer alike.
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
        let field = FIELDS
            .iter()
            .find(|f| message.contains(*f))
            .copied()
            .unwrap_or("body");
        Refusal::invalid(field, message)
    })?;
    Ok(sampling)
}

/// The sampling fields the engine validates, named in its messages.
const FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "stop",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context_and_is_capped_by_it() {
        assert_eq!(sampling_of(&json!({}), 100).unwrap().max_tokens, 100);
        assert_eq!(
            sampling_of(&json!({"max_tokens": 7}), 100)
                .unwrap()
                .max_tokens,
            7
        );
        assert_eq!(
            sampling_of(&json!({"max_completion_tokens": 500}), 100)
                .unwrap()
                .max_tokens,
            100
        );
        assert_eq!(
            sampling_of(&json!({"max_tokens": 0}), 100)
                .unwrap_err()
                .param,
            Some("max_tokens")
        );
    }

    #[test]
    fn fields_are_read_or_refused_by_name() {
        let s = sampling_of(
            &json!({"stop": ["a", "b"], "temperature": 0, "seed": 5, "ignore_eos": true}),
            10,
        )
        .unwrap();
        assert_eq!(
            (s.stop.len(), s.temperature, s.seed, s.ignore_eos),
            (2, 0.0, 5, true)
        );
        assert_eq!(sampling_of(&json!({"stop": "x"}), 10).unwrap().stop, ["x"]);
        assert_eq!(
            sampling_of(&json!({"stop": 3}), 10).unwrap_err().param,
            Some("stop")
        );
        assert_eq!(
            sampling_of(&json!({"temperature": "hot"}), 10)
                .unwrap_err()
                .param,
            Some("temperature")
        );
        assert_eq!(
            sampling_of(&json!({"top_p": 0}), 10).unwrap_err().param,
            Some("top_p")
        );
        assert_eq!(
            sampling_of(&json!({"temperature": -1}), 10)
                .unwrap_err()
                .param,
            Some("temperature")
        );
    }

    #[test]
    fn an_unseeded_request_gets_a_seed_of_its_own() {
        let seeds: std::collections::HashSet<u64> = (0..8)
            .map(|_| sampling_of(&json!({}), 10).unwrap().seed)
            .collect();
        assert!(seeds.len() > 1, "every unseeded request got the same seed");
    }

    #[test]
    fn refusals_have_openais_error_shape() {
        let body = Refusal::invalid("n", "no").body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "n");
    }
}

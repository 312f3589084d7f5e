//! What one request cost: the [`UsageRecord`] the proxy hands to the ledger.

use serde::{Deserialize, Serialize};

/// One usage record: everything finance needs to know about one request.
///
/// Built by the proxy when a request ends (completed, cancelled or broken) and
/// passed to [`crate::Ledger::record`]. Plain data: every field is public and
/// there is no constructor to keep in step with the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// When the request arrived, in microseconds since the Unix epoch (UTC).
    pub time_us: i64,
    /// The request id sluice assigned or honoured (`x-request-id`). Not
    /// assumed unique: clients may reuse ids.
    pub request_id: String,
    /// The tenant of the calling key, when auth is configured.
    pub tenant: Option<String>,
    /// The id (never the secret) of the virtual key that made the call.
    pub key_id: Option<String>,
    /// The model name the client asked for (the model group).
    pub model: String,
    /// The upstream / provider that served the request.
    pub provider: String,
    /// The model name the upstream was called with (what it bills for).
    pub upstream_model: String,
    /// Token counts.
    pub usage: TokenUsage,
    /// Whether the counts come from the provider or were counted by sluice.
    pub usage_source: UsageSource,
    /// The cost in micro-dollars (1 USD = 1_000_000): `cost_picos` rounded
    /// half up once, from [`crate::PriceTable::cost`], for display and
    /// budgets. Zero when `priced` is false.
    pub cost_micros: i64,
    /// The exact cost in pico-dollars (1 USD = 10^12), from
    /// [`crate::PriceTable::cost`]: what reports and totals sum. Zero when
    /// `priced` is false.
    pub cost_picos: i64,
    /// Whether a price was known for the model. An unpriced record is never
    /// a silent $0: reports count unpriced requests separately.
    pub priced: bool,
    /// Time from request headers to the last byte sent to the client.
    pub latency_ms: u64,
    /// Time to the first token sent to the client; `None` when none was sent.
    pub ttft_ms: Option<u64>,
    /// The HTTP status sent to the client.
    pub http_status: u16,
    /// Whether the client asked for a stream (SSE).
    pub stream: bool,
    /// How the request ended.
    pub end_state: EndState,
}

/// Token counts of one request, in OpenAI's convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// All prompt (input) tokens, cache reads and writes included (OpenAI's
    /// `prompt_tokens`). Providers that report cache reads and writes
    /// separately (Anthropic's `cache_read_input_tokens` and
    /// `cache_creation_input_tokens`) must be added in.
    pub prompt_tokens: u64,
    /// Completion (output) tokens, reasoning tokens included.
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` read from the provider's prompt cache
    /// (OpenAI's `prompt_tokens_details.cached_tokens`).
    pub cached_prompt_tokens: u64,
    /// The part of `prompt_tokens` written to the provider's prompt cache
    /// (Anthropic's `cache_creation_input_tokens`, Bedrock's
    /// `cacheWriteInputTokens`), billed at [`crate::Price::cache_write`].
    /// Absent (0) in records spooled before sluice counted cache writes.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// Where the token counts of a record come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider's own `usage` numbers.
    Reported,
    /// Counted by sluice with [`crate::count_tokens`] (the provider gave none).
    Counted,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    /// The response was delivered whole.
    Completed,
    /// The client went away or the stream was cancelled / preempted.
    Cancelled,
    /// The upstream failed part way (mid-stream error, reset connection).
    Broken,
}

impl UsageSource {
    /// The text stored in the database and in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Counted => "counted",
        }
    }

    /// Parses [`UsageSource::as_str`]'s output.
    pub fn parse(text: &str) -> Option<UsageSource> {
        match text {
            "reported" => Some(UsageSource::Reported),
            "counted" => Some(UsageSource::Counted),
            _ => None,
        }
    }
}

impl EndState {
    /// The text stored in the database and in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            EndState::Completed => "completed",
            EndState::Cancelled => "cancelled",
            EndState::Broken => "broken",
        }
    }

    /// Parses [`EndState::as_str`]'s output.
    pub fn parse(text: &str) -> Option<EndState> {
        match text {
            "completed" => Some(EndState::Completed),
            "cancelled" => Some(EndState::Cancelled),
            "broken" => Some(EndState::Broken),
            _ => None,
        }
    }
}

/// The current time in microseconds since the Unix epoch, for
/// [`UsageRecord::time_us`]. A clock before 1970 reads as 0.
pub fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_texts_round_trip() {
        for source in [UsageSource::Reported, UsageSource::Counted] {
            assert_eq!(UsageSource::parse(source.as_str()), Some(source));
        }
        for state in [EndState::Completed, EndState::Cancelled, EndState::Broken] {
            assert_eq!(EndState::parse(state.as_str()), Some(state));
        }
        assert_eq!(EndState::parse("Completed"), None);
    }

    #[test]
    fn serde_uses_the_stored_texts() {
        let json = serde_json::to_string(&(UsageSource::Counted, EndState::Broken)).unwrap();
        assert_eq!(json, r#"["counted","broken"]"#);
    }

    #[test]
    fn clock_reads_after_2020() {
        assert!(unix_micros_now() > 1_577_836_800_000_000);
    }
}

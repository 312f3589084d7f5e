//! Counting tokens when a provider reports no usage.
//!
//! [`count_tokens`] runs a real BPE tokenizer (`tiktoken-rs`, whose vocabularies
//! are compiled into the crate: nothing is downloaded). Each encoder is built
//! once, on first use, and shared; building one takes tens of milliseconds,
//! encoding is then fast.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// The vocabulary used to count a model's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, o1/o3/o4 models.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5, `text-embedding-*`.
    Cl100kBase,
}

/// The tokenizer for `model` (case-insensitive; a provider prefix such as
/// `openai/` and a fine-tune wrapper `ft:BASE:...` are looked through):
///
/// - `gpt-4o*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-5*`, `chatgpt-*`, `o1*`, `o3*`, `o4*`: o200k_base;
/// - `gpt-4*`, `gpt-3.5*`, `text-embedding-*`: cl100k_base;
/// - anything else (other vendors' and local models): **o200k_base as an
///   approximation**. Their real vocabularies differ, typically by 10-20% in
///   count; those providers report usage themselves, so this path only runs
///   when they do not.
pub fn tokenizer_for(model: &str) -> Tokenizer {
    let lowered = model.trim().to_ascii_lowercase();
    let mut name = lowered.rsplit('/').next().unwrap_or(&lowered);
    if let Some(rest) = name.strip_prefix("ft:") {
        name = rest.split(':').next().unwrap_or(rest);
    }
    const O200K: &[&str] = &[
        "gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-", "o1", "o3", "o4",
    ];
    const CL100K: &[&str] = &["gpt-4", "gpt-3.5", "gpt-35", "text-embedding-"];
    if O200K.iter().any(|prefix| name.starts_with(prefix)) {
        Tokenizer::O200kBase
    } else if CL100K.iter().any(|prefix| name.starts_with(prefix)) {
        Tokenizer::Cl100kBase
    } else {
        Tokenizer::O200kBase
    }
}

/// The number of tokens in `text` for `model`, with the tokenizer chosen by
/// [`tokenizer_for`]. Special-token text such as `<|endoftext|>` is counted
/// as ordinary text, as the provider would for user content. Chat framing
/// (a few tokens per message) is not added: count the messages' text and
/// add the framing at the call site if wanted.
///
/// Should an embedded vocabulary ever fail to load, falls back to one token
/// per 4 bytes (rounded up) rather than failing the request.
pub fn count_tokens(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoder(tokenizer_for(model)) {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// The shared encoder of `tokenizer`, built on first use.
fn encoder(tokenizer: Tokenizer) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    let (cell, build): (_, fn() -> Option<CoreBPE>) = match tokenizer {
        Tokenizer::O200kBase => (&O200K, || {
            build_logged("o200k_base", tiktoken_rs::o200k_base())
        }),
        Tokenizer::Cl100kBase => (&CL100K, || {
            build_logged("cl100k_base", tiktoken_rs::cl100k_base())
        }),
    };
    cell.get_or_init(build).as_ref()
}

fn build_logged<E: std::fmt::Display>(name: &str, built: Result<CoreBPE, E>) -> Option<CoreBPE> {
    built
        .map_err(|e| tracing::error!(tokenizer = name, error = %e, "cannot build tokenizer; estimating 4 bytes per token"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_their_vocabularies() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "o3-mini",
            "gpt-4.1-nano",
            "openai/GPT-5",
            "ft:gpt-4o-mini:acme::abc",
        ] {
            assert_eq!(tokenizer_for(model), Tokenizer::O200kBase, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo-0125",
            "text-embedding-3-small",
        ] {
            assert_eq!(tokenizer_for(model), Tokenizer::Cl100kBase, "{model}");
        }
        assert_eq!(tokenizer_for("claude-sonnet-4"), Tokenizer::O200kBase);
    }

    #[test]
    fn counts_match_tiktoken_on_known_strings() {
        // Token ids as OpenAI's tiktoken (Python) produces them.
        let o200k = encoder(Tokenizer::O200kBase).unwrap();
        let cl100k = encoder(Tokenizer::Cl100kBase).unwrap();
        assert_eq!(o200k.encode_ordinary("hello world"), [24912, 2375]);
        assert_eq!(cl100k.encode_ordinary("hello world"), [15339, 1917]);
        assert_eq!(
            o200k.encode_ordinary("tiktoken is great!"),
            [83, 8251, 2488, 382, 2212, 0]
        );
        assert_eq!(
            cl100k.encode_ordinary("tiktoken is great!"),
            [83, 1609, 5963, 374, 2294, 0]
        );
        assert_eq!(count_tokens("gpt-4o", "tiktoken is great!"), 6);
        assert_eq!(count_tokens("gpt-4", "hello world"), 2);
        assert_eq!(count_tokens("gpt-4o", ""), 0);
        // Special-token text is ordinary text: more than one token.
        assert!(count_tokens("gpt-4o", "<|endoftext|>") > 1);
    }

    #[test]
    fn vocabularies_differ_on_non_english_text() {
        let text = "Привет, как дела? Это проверка токенизатора.";
        let o200k = count_tokens("gpt-4o", text);
        let cl100k = count_tokens("gpt-4", text);
        assert!(
            o200k < cl100k,
            "o200k {o200k} should beat cl100k {cl100k} on Cyrillic"
        );
    }
}

//! Chat templates end to end: the tiny model chats through the engine; stop
//! ids from `generation_config.json` end generation; SmolLM2's real template
//! (read from the GGUF) renders and tokenizes as its model expects.
//!
//! The SmolLM2 test needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (run
//! `batcher/scripts/fetch-smollm2.sh`); without it, it is skipped, except
//! under `CI` where it fails.
// Test helpers outside #[test] fns fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::json;
use sluice_batcher::model::tiny::{scratch_dir, write_tiny_model};
use sluice_batcher::{
    encode_chat_prompt, load_model, Engine, EngineConfig, FinishReason, GenerateRequest,
    SamplingParams,
};

fn smollm2_path() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let candidates: Vec<PathBuf> = match std::env::var_os("SLUICE_SMOLLM2_GGUF") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![
            manifest.join("../models").join(file),
            manifest.join("models").join(file),
        ],
    };
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Some(found.clone());
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !in_ci,
        "{} missing under CI: run batcher/scripts/fetch-smollm2.sh first",
        candidates[0].display()
    );
    eprintln!(
        "skipping: {} not found (run batcher/scripts/fetch-smollm2.sh)",
        candidates[0].display()
    );
    None
}

/// Greedy generation of up to `max_tokens` from `prompt`.
fn generate(
    dir: &Path,
    prompt: Vec<u32>,
    max_tokens: usize,
    ignore_eos: bool,
) -> (Vec<u32>, FinishReason) {
    let model = load_model(dir, &Device::Cpu, None).unwrap();
    let engine = Engine::start(model, EngineConfig::default()).unwrap();
    let params = SamplingParams {
        ignore_eos,
        ..SamplingParams::greedy(max_tokens)
    };
    let stream = engine
        .submit_blocking(GenerateRequest::from_tokens(prompt, params))
        .unwrap();
    let (tokens, finished, error) = stream.collect_blocking();
    assert_eq!(error, None);
    (tokens, finished.unwrap().reason)
}

#[test]
fn the_tiny_model_chats_through_the_engine() {
    let dir = write_tiny_model(&scratch_dir("chat-engine"), 7, false).unwrap();
    let model = load_model(&dir, &Device::Cpu, None).unwrap();
    let chat = model.chat.clone().unwrap();
    let tokenizer = model.tokenizer.clone().unwrap();
    let messages = json!([{"role": "user", "content": "w10 w11 w12"}]);
    let text = chat.render(&messages, None, true).unwrap();
    assert_eq!(text, "w1 w3 user\nw10 w11 w12 w0\nw3 assistant\n");
    let prompt = encode_chat_prompt(&tokenizer, &chat, &text).unwrap();
    assert_eq!(prompt, [1, 3, 2, 10, 11, 12, 0, 3, 2]);

    let engine = Engine::start(model, EngineConfig::default()).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(4)
    };
    let stream = engine
        .submit_blocking(GenerateRequest::from_tokens(prompt, params))
        .unwrap();
    let (tokens, finished, error) = stream.collect_blocking();
    assert_eq!(error, None);
    assert_eq!(tokens.len(), 4);
    assert_eq!(finished.unwrap().prompt_tokens, 9);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_engine_stops_on_generation_config_eos_ids() {
    let dir = write_tiny_model(&scratch_dir("chat-stop"), 7, false).unwrap();
    let prompt = vec![1, 3, 2, 10, 11, 12, 0, 3, 2];
    let (free, _) = generate(&dir, prompt.clone(), 6, true);
    // The second greedy token becomes a stop id; it must not be the config's own EOS.
    let stop = free[1];
    assert!(stop != 0 && free[0] != stop, "pick another seed: {free:?}");
    let (baseline, reason) = generate(&dir, prompt.clone(), 6, false);
    assert_eq!(
        (baseline.len(), reason),
        (6, FinishReason::Length),
        "{baseline:?}"
    );

    std::fs::write(
        dir.join("generation_config.json"),
        format!(r#"{{"bos_token_id": 1, "eos_token_id": [0, {stop}]}}"#),
    )
    .unwrap();
    let (stopped, reason) = generate(&dir, prompt, 6, false);
    assert_eq!(stopped, free[..1]);
    assert_eq!(reason, FinishReason::EndOfSequence);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn smollm2_template_renders_a_system_and_user_conversation() {
    let Some(path) = smollm2_path() else { return };
    let model = load_model(&path, &Device::Cpu, None).unwrap();
    let chat = model
        .chat
        .as_ref()
        .expect("SmolLM2's GGUF has a chat template");
    let tokenizer = model.tokenizer.as_ref().unwrap();
    assert_eq!(
        chat.special_tokens().bos_token.as_deref(),
        Some("<|im_start|>")
    );
    assert_eq!(
        chat.special_tokens().eos_token.as_deref(),
        Some("<|im_end|>")
    );
    assert_eq!(model.runner.config().eos_token_ids, [2]);

    // The template: each message as `<|im_start|>{role}\n{content}<|im_end|>\n`,
    // a default system prompt only when the first message is not `system`,
    // then `<|im_start|>assistant\n` for the generation prompt.
    let messages = json!([
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]);
    let text = chat.render(&messages, None, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let user_only = json!([{"role": "user", "content": "Hi"}]);
    assert_eq!(
        chat.render(&user_only, None, false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n"
    );

    // `<|im_start|>` (id 1) is also the BOS: the prompt starts with it once,
    // and every turn marker is its single special token.
    let ids = encode_chat_prompt(tokenizer, chat, &text).unwrap();
    assert_eq!(ids[0], 1);
    assert_ne!(ids[1], 1);
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3);
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
    // Token by token, the ids spell the rendered text (a whole-sequence
    // decode puts spaces after special tokens).
    let spelled: String = ids
        .iter()
        .map(|id| tokenizer.decode(&[*id], false).unwrap())
        .collect();
    assert_eq!(spelled, text);
    // Text right after a special token gets no space in front (`system`,
    // not `Ġsystem`), and digits are split one by one, as in HF's tokenizer.
    assert_eq!(ids[1], tokenizer.token_to_id("system").unwrap());
    assert_eq!(ids[2], tokenizer.token_to_id("Ċ").unwrap());
    let digits = tokenizer.encode("in 2024", false).unwrap();
    assert_eq!(digits.get_tokens(), ["in", "Ġ", "2", "0", "2", "4"]);
    // SmolLM2's tokenizer adds no BOS itself: the same ids as a plain encode.
    let plain = tokenizer.encode(text.as_str(), true).unwrap();
    assert_eq!(ids, plain.get_ids());
}

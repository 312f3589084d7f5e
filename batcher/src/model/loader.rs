//! Loading a model (and its tokenizer and chat template) from disk: an HF
//! directory (`config.json`, `model.safetensors`, optional `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`) or a GGUF file
//! (quantized weights; tokenizer and chat template from the GGUF metadata).
//! [`load_model`] picks by what the path is.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::Device;
use tokenizers::Tokenizer;

use super::config::{ModelConfig, RopeStyle};
use super::llama::LlamaRunner;
use super::weights::{GgufOptions, LlamaWeights};
use crate::chat::{source, ChatTemplate};
use crate::error::{BatcherError, Result};

/// A runner plus the tokenizer and chat template that came with it (if any).
#[derive(Debug)]
pub struct LoadedModel {
    /// The model, ready to run.
    pub runner: LlamaRunner,
    /// Its tokenizer; `None` for a directory without `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    /// Its chat template (or the configured override); `None` when the
    /// model has none and no override was given.
    pub chat: Option<ChatTemplate>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BatcherError + '_ {
    move |source| BatcherError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads the model at `path` onto `device`: an HF model folder when `path`
/// is a directory, else a GGUF file (default [`GgufOptions`]). A
/// `chat_template_override` file (Jinja) replaces the model's own template.
pub fn load_model(
    path: &Path,
    device: &Device,
    chat_template_override: Option<&Path>,
) -> Result<LoadedModel> {
    if path.is_dir() {
        hf_dir(path, device, chat_template_override)
    } else {
        gguf(
            path,
            device,
            &GgufOptions::default(),
            chat_template_override,
        )
    }
}

/// Loads an HF model directory onto `device`, with its own chat template.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    hf_dir(dir, device, None)
}

/// Adds `id` to the stop ids unless it is there already.
fn add_eos(config: &mut ModelConfig, id: u32) {
    if !config.eos_token_ids.contains(&id) {
        config.eos_token_ids.push(id);
    }
}

fn hf_dir(dir: &Path, device: &Device, chat_override: Option<&Path>) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let json = std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
    let mut config = ModelConfig::from_hf_json(&json)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() {
        Some(
            Tokenizer::from_file(&tokenizer_path)
                .map_err(|e| BatcherError::Tokenizer(e.to_string()))?,
        )
    } else {
        None
    };
    // Stop on every end id the folder names: `config.json`'s, then
    // `generation_config.json`'s, then the chat EOS token's.
    for id in source::generation_config_eos(dir)? {
        add_eos(&mut config, id);
    }
    let chat_files = source::hf_chat_files(
        dir,
        tokenizer.as_ref(),
        config.bos_token_id,
        config.eos_token_ids.first().copied(),
    )?;
    if let Some(id) = chat_files.eos_id(tokenizer.as_ref()) {
        add_eos(&mut config, id);
    }
    let chat = chat_files.into_template(chat_override)?;
    let weights = LlamaWeights::load_safetensors(&config, dir, device)?;
    Ok(LoadedModel {
        runner: LlamaRunner::new(config, weights, device)?,
        tokenizer,
        chat,
    })
}

/// Reads the model shape from GGUF metadata (`llama.*` keys).
pub fn gguf_config(content: &gguf_file::Content) -> Result<ModelConfig> {
    let get = |key: &str| {
        content
            .metadata
            .get(key)
            .ok_or_else(|| BatcherError::Config(format!("GGUF metadata lacks {key}")))
    };
    let arch = get("general.architecture")?
        .to_string()
        .map_err(|e| BatcherError::Config(e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(BatcherError::Config(format!(
            "GGUF architecture {arch:?} is not llama"
        )));
    }
    let num = |key: &str| -> Result<usize> {
        Ok(get(key)?
            .to_u32()
            .map_err(|e| BatcherError::Config(e.to_string()))? as usize)
    };
    let float = |key: &str| -> Result<f32> {
        get(key)?
            .to_f32()
            .map_err(|e| BatcherError::Config(e.to_string()))
    };
    let hidden_size = num("llama.embedding_length")?;
    let num_attention_heads = num("llama.attention.head_count")?;
    let head_dim = match num("llama.rope.dimension_count") {
        Ok(d) => d,
        Err(_) => hidden_size / num_attention_heads.max(1),
    };
    let vocab_size = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|info| info.shape.dims()[0])
        .ok_or_else(|| BatcherError::Config("GGUF lacks token_embd.weight".into()))?;
    // End of sequence, and llama.cpp's end of turn when the file names one.
    let mut eos_token_ids: Vec<u32> = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Ok(id) = num(key) {
            if !eos_token_ids.contains(&(id as u32)) {
                eos_token_ids.push(id as u32);
            }
        }
    }
    let config = ModelConfig {
        vocab_size,
        hidden_size,
        intermediate_size: num("llama.feed_forward_length")?,
        num_hidden_layers: num("llama.block_count")?,
        num_attention_heads,
        num_key_value_heads: num("llama.attention.head_count_kv").unwrap_or(num_attention_heads),
        head_dim,
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
        rope_theta: float("llama.rope.freq_base").unwrap_or(10_000.0),
        max_position_embeddings: num("llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        attention_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        rope_style: RopeStyle::Interleaved,
        eos_token_ids,
        bos_token_id: num("tokenizer.ggml.bos_token_id").ok().map(|b| b as u32),
    };
    config.validate()?;
    Ok(config)
}

/// The GGUF pre-tokenizer names (`tokenizer.ggml.pre`) of the StarCoder
/// family, whose tokenizers split digits one by one (llama.cpp's regex for
/// them starts with `\p{N}`; HF's `tokenizer.json` has `Digits`).
const DIGIT_SPLITTING_PRE: &[&str] = &[
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva",
];

/// The tokenizer from GGUF metadata, with candle's GPT-2 fallback
/// pre-tokenizer corrected: candle uses `ByteLevel` with
/// `add_prefix_space`, which puts a space before the text after every special
/// token (`<|im_start|>` + `Ġuser` instead of `user`), and splits numbers
/// whole. llama.cpp and HF do neither for byte-level BPE, and chat prompts
/// are mostly text after special tokens.
fn gguf_tokenizer(content: &gguf_file::Content) -> Result<Tokenizer> {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;

    let mut tokenizer = Tokenizer::from_gguf(content)?;
    let meta_true = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false)
    };
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if let Some(PreTokenizerWrapper::ByteLevel(level)) = tokenizer.get_pre_tokenizer() {
        let byte_level = ByteLevel::new(
            level.add_prefix_space && meta_true("tokenizer.ggml.add_space_prefix"),
            level.trim_offsets,
            level.use_regex,
        );
        let fixed: PreTokenizerWrapper = if pre.is_some_and(|p| DIGIT_SPLITTING_PRE.contains(&p)) {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        tokenizer.with_pre_tokenizer(Some(fixed));
    }
    Ok(tokenizer)
}

/// Loads a GGUF file onto `device`, with the tokenizer from its metadata,
/// with the default [`GgufOptions`].
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_gguf_with(path, device, &GgufOptions::default())
}

/// Loads a GGUF file onto `device` with explicit [`GgufOptions`], with its
/// own chat template.
pub fn load_gguf_with(path: &Path, device: &Device, options: &GgufOptions) -> Result<LoadedModel> {
    gguf(path, device, options, None)
}

fn gguf(
    path: &Path,
    device: &Device,
    options: &GgufOptions,
    chat_override: Option<&Path>,
) -> Result<LoadedModel> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let content = gguf_file::Content::read(&mut file)?;
    let config = gguf_config(&content)?;
    let tokenizer = gguf_tokenizer(&content)?;
    let chat = source::gguf_chat_template(&content, &tokenizer, chat_override)?;
    let weights = LlamaWeights::from_gguf(&config, &content, &mut file, device, options)?;
    Ok(LoadedModel {
        runner: LlamaRunner::new(config, weights, device)?,
        tokenizer: Some(tokenizer),
        chat,
    })
}

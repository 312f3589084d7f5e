//! The packed runner against candle-transformers' own Llama on the same tiny weights.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as reference;

use crate::model::tiny::{scratch_dir, write_tiny_model};
use crate::model::{load_hf_dir, AttentionKernel, ChunkInput, PackedBatch};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn argmax(t: &Tensor) -> u32 {
    t.flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check_against_reference(tied: bool, kernel: AttentionKernel) {
    let dir = write_tiny_model(&scratch_dir("logits"), 11, tied).unwrap();
    let device = Device::Cpu;
    let ours = load_hf_dir(&dir, &device)
        .unwrap()
        .runner
        .with_attention_kernel(kernel);

    let json = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let ref_config: reference::LlamaConfig = serde_json::from_str(&json).unwrap();
    let ref_config = ref_config.into_config(false);
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &device).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &device);
    let theirs = reference::Llama::load(vb, &ref_config).unwrap();
    let mut ref_cache = reference::Cache::new(true, DType::F32, &ref_config, &device).unwrap();

    // Shuffled block ids: positions land in non-contiguous blocks.
    let block_size = 4;
    let table = [6u32, 1, 9, 3, 0, 7, 2];
    let cache = ours.new_cache(10, block_size).unwrap();
    let mut tokens: Vec<u32> = vec![1, 17, 42, 99, 7, 200, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    let batch = |tokens: &[u32], start: usize| {
        let chunk = ChunkInput {
            tokens,
            start,
            block_table: &table,
            wants_logits: true,
        };
        PackedBatch::new(&[chunk], block_size, ours.config().kv_width(), &device).unwrap()
    };
    let mut pos = 0;
    for step in 0..6 {
        let new = &tokens[pos..];
        let ours_logits = ours.forward(&batch(new, pos), &cache).unwrap();
        let input = Tensor::new(new, &device).unwrap().unsqueeze(0).unwrap();
        let ref_logits = theirs.forward(&input, pos, &mut ref_cache).unwrap();
        let diff = max_abs_diff(
            &ours_logits.flatten_all().unwrap(),
            &ref_logits.flatten_all().unwrap(),
        );
        assert!(diff < 1e-4, "step {step}: max |diff| {diff}");
        pos = tokens.len();
        tokens.push(argmax(&ref_logits));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn logits_match_candle_transformers_untied() {
    check_against_reference(false, AttentionKernel::Cpu);
    check_against_reference(false, AttentionKernel::Gather);
}

#[test]
fn logits_match_candle_transformers_tied() {
    check_against_reference(true, AttentionKernel::Cpu);
    check_against_reference(true, AttentionKernel::Gather);
}

/// Qwen2-style (Q/K/V biases) against candle-transformers' qwen2 model.
#[test]
fn qwen2_style_biases_match_candle_transformers() {
    use crate::model::tiny::{random_weights, tiny_config};
    use crate::model::weights::LlamaWeights;
    use crate::model::LlamaRunner;
    use candle_transformers::models::qwen2;

    let device = Device::Cpu;
    let mut config = tiny_config(true);
    config.attention_bias = true;
    let weights = random_weights(&config, 21).unwrap();
    let ours = LlamaRunner::new(
        config.clone(),
        LlamaWeights::from_hf_tensors(&config, weights.clone(), &device).unwrap(),
        &device,
    )
    .unwrap();
    let ref_config: qwen2::Config = serde_json::from_value(serde_json::json!({
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "sliding_window": 4096,
        "max_window_layers": 0,
        "tie_word_embeddings": true,
        "rope_theta": config.rope_theta as f64,
        "rms_norm_eps": config.rms_norm_eps,
        "use_sliding_window": false,
        "hidden_act": "silu",
    }))
    .unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights, DType::F32, &device);
    let mut theirs = qwen2::ModelForCausalLM::new(&ref_config, vb).unwrap();

    let block_size = 4;
    let table = [4u32, 0, 2, 5, 1];
    let cache = ours.new_cache(6, block_size).unwrap();
    let mut tokens: Vec<u32> = vec![3, 30, 60, 90, 120, 150, 180, 210, 240];
    let mut pos = 0;
    for step in 0..5 {
        let new = &tokens[pos..];
        let chunk = ChunkInput {
            tokens: new,
            start: pos,
            block_table: &table,
            wants_logits: true,
        };
        let batch = PackedBatch::new(&[chunk], block_size, config.kv_width(), &device).unwrap();
        let ours_logits = ours.forward(&batch, &cache).unwrap();
        let input = Tensor::new(new, &device).unwrap().unsqueeze(0).unwrap();
        let ref_logits = theirs.forward(&input, pos).unwrap();
        let diff = max_abs_diff(
            &ours_logits.flatten_all().unwrap(),
            &ref_logits.flatten_all().unwrap(),
        );
        assert!(diff < 1e-4, "step {step}: max |diff| {diff}");
        pos = tokens.len();
        tokens.push(argmax(&ref_logits));
    }
}

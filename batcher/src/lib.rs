//! sluice's built-in inference engine: a vLLM-style continuous-batching
//! engine with a paged KV cache, on candle.
//!
//! Where to start reading:
//! - [`serve`]: what the gateway uses — [`serve::ServedModel::start`] loads a
//!   model, sizes its KV cache and starts its engine; it turns messages into
//!   prompt tokens. Nothing outside this crate touches candle.
//! - [`engine`]: the actor. [`EngineHandle::submit`] returns a [`TokenStream`];
//!   a dedicated thread owns the model and the KV cache and runs one step at a time.
//! - [`scheduler`]: what runs in each step (continuous batching, chunked
//!   prefill, priorities, preemption by recompute, prefix caching); pure Rust.
//! - [`block_allocator`]: the KV block free list and per-sequence block tables;
//!   [`prefix_cache`]: which full blocks hold which token chains (automatic
//!   prefix caching); [`kv_cache`]: the per-layer K/V pools they index.
//! - [`model`]: the packed, variable-length Llama runner and its paged attention;
//!   loaders for HF directories and GGUF files.
//! - [`sampling`]: greedy / temperature / top-k / top-p, seeds, penalties, logprobs;
//!   [`text`]: incremental detokenization and stop strings.
//! - [`chat`]: the model's Jinja chat template ([`ChatTemplate::render`]) turns
//!   OpenAI `messages` into a prompt; [`encode_chat_prompt`] tokenizes it with
//!   exactly one BOS. [`load_model`] loads a GGUF file or HF folder with it.
//!
//! Tests use a tiny deterministic random-weight Llama that [`model::tiny`]
//! generates; the real demo model is SmolLM2-135M-Instruct (GGUF), fetched by
//! `batcher/scripts/fetch-smollm2.sh` or, in-process on first run, by
//! [`fetch::ModelFetch::ensure`].

pub mod block_allocator;
pub mod chat;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod kv_cache;
pub mod model;
pub mod prefix_cache;
pub mod rng;
pub mod sampling;
pub mod scheduler;
pub mod serve;
pub mod text;

pub use chat::{encode_chat_prompt, ChatTemplate, SpecialTokens};
pub use engine::{
    Engine, EngineConfig, EngineHandle, EngineStats, Event, FinishReason, Finished,
    GenerateRequest, Prompt, TokenEvent, TokenStream,
};
pub use error::{BatcherError, ChatError, Result};
pub use model::{
    load_gguf, load_gguf_with, load_hf_dir, load_model, AttentionKernel, GgufOptions, LoadedModel,
};
pub use sampling::SamplingParams;
pub use scheduler::{AdmissionPolicy, SchedulerConfig, SeqId};

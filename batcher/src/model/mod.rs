//! The model runner: a Llama-family decoder written for packed,
//! variable-length batches over a paged KV cache.
//!
//! Start at [`LlamaRunner::forward`]; [`PackedBatch`] says what one step
//! consumes; [`load_hf_dir`] and [`load_gguf`] read models from disk.

pub mod attention;
pub mod batch;
pub mod config;
pub mod cpu_attention;
pub mod llama;
pub mod loader;
pub mod tiny;
pub mod weights;

pub use batch::{ChunkInput, PackedBatch};
pub use config::{ModelConfig, RopeStyle};
pub use llama::{AttentionKernel, LlamaRunner};
pub use loader::{load_gguf, load_gguf_with, load_hf_dir, load_model, LoadedModel};
pub use weights::GgufOptions;

//! sluice's built-in inference engine.
//!
//! Planned shape (DESIGN.md, "The batcher"): a continuous-batching scheduler
//! with a paged KV cache and a candle model runner, served in-process behind
//! the same routing as any upstream. Nothing is implemented yet; until it
//! lands, a sluice with no upstream configured answers every model with 404.

//! Anthropic's Messages API as a client dialect.

//! OpenAI's Responses API as a client dialect.

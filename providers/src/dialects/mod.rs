//! Client dialects other than OpenAI's chat completions, converted to and
//! from the chat-completions shape every provider adapter reads (the hub):
//! [`messages`] is Anthropic's Messages API, [`responses`] OpenAI's
//! Responses API. Each module turns a client request into a chat request
//! and rewrites chat replies (whole or streamed) into the client's shape.

pub mod messages;
pub mod responses;

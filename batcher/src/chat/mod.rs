//! Chat templates: OpenAI Chat Completions `messages` rendered into the
//! model's own prompt format with the model's Jinja chat template (the same
//! templates Hugging Face's `apply_chat_template` runs), then tokenized
//! without a doubled BOS.
//!
//! Start at [`ChatTemplate::render`] and [`encode_chat_prompt`]. The template
//! comes with the model ([`crate::load_model`] fills
//! [`crate::LoadedModel::chat`]): GGUF metadata `tokenizer.chat_template`, or
//! an HF folder's `tokenizer_config.json` (`source.rs`); a configured file
//! replaces it. `messages.rs` checks and flattens the messages first.

mod messages;
pub(crate) mod source;
mod tojson;

#[cfg(test)]
mod tests;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value};
use tokenizers::Tokenizer;

use crate::error::{BatcherError, ChatError, Result};

/// The template's name inside its environment.
const TEMPLATE_NAME: &str = "chat";

/// The special tokens a chat template may print (`{{ bos_token }}`), as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning-of-sequence text, e.g. `<s>` or `<|im_start|>`.
    pub bos_token: Option<String>,
    /// End-of-sequence text, e.g. `</s>` or `<|im_end|>`.
    pub eos_token: Option<String>,
}

/// A model's chat template, parsed once, rendered per request.
///
/// Rendering follows `transformers`: `trim_blocks` and `lstrip_blocks` on,
/// `raise_exception(message)` and `strftime_now(format)` defined, `tojson`
/// as Python's `json.dumps` writes it, and Python's string and dict methods
/// (`.strip()`, `.startswith()`, `.items()`) available.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Holds the parsed template and the functions it may call.
    env: Environment<'static>,
    /// The Jinja source, as given.
    source: String,
    /// Whether the source mentions `tools` at all; if not, tools are refused
    /// rather than silently dropped.
    uses_tools: bool,
    /// Passed to the template as `bos_token` / `eos_token`.
    special: SpecialTokens,
}

/// The error `raise_exception` fails rendering with, found again in the
/// error's source chain so its message reaches the client unchanged.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// Parses `source` (Jinja) with the special tokens it may print. Fails
    /// with [`ChatError::InvalidTemplate`] when the source does not parse.
    pub fn new(
        source: impl Into<String>,
        special: SpecialTokens,
    ) -> std::result::Result<Self, ChatError> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::InvalidTemplate(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(
                    minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
                        .with_source(Raised(message)),
                )
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson::tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| ChatError::InvalidTemplate(describe(&e)))?;
        Ok(Self {
            env,
            uses_tools: source.contains("tools"),
            source,
            special,
        })
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The special tokens the template is given.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether the template has a place for `tools` (it mentions them).
    pub fn uses_tools(&self) -> bool {
        self.uses_tools
    }

    /// Renders an OpenAI Chat Completions conversation into prompt text.
    ///
    /// `messages` is the request's `messages` array as JSON: roles `system`,
    /// `developer` (given to the template as `system`), `user`, `assistant`,
    /// `tool`; content as a string or a list of `text` parts (joined with
    /// newlines). `tools` is the request's `tools` array, if any.
    /// `add_generation_prompt` ends the text with the opening of the
    /// assistant's turn. Errors are [`ChatError`]s fit for a 400 answer.
    pub fn render(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> std::result::Result<String, ChatError> {
        let messages = messages::normalize(messages)?;
        let tools = match tools {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(list)) if list.is_empty() => None,
            Some(list @ serde_json::Value::Array(_)) => Some(list),
            Some(_) => return Err(ChatError::invalid("tools", "must be an array")),
        };
        if tools.is_some() && !self.uses_tools {
            return Err(ChatError::ToolsUnsupported);
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        // A missing token is undefined (prints nothing), as in `transformers`.
        let special = |text: &Option<String>| text.as_deref().map_or(Value::UNDEFINED, Value::from);
        let context = minijinja::context! {
            messages => Value::from(Serde(&messages)),
            tools => tools.map(|t| Value::from(Serde(t))),
            add_generation_prompt => add_generation_prompt,
            bos_token => special(&self.special.bos_token),
            eos_token => special(&self.special.eos_token),
        };
        template.render(context).map_err(render_error)
    }
}

/// Prompt token ids for `rendered` (from [`ChatTemplate::render`]) with
/// exactly one BOS where the model wants one.
///
/// The text is tokenized without the tokenizer's own special tokens (a
/// template prints the BOS it wants, and never an EOS at the end of a
/// prompt); when the tokenizer would add a BOS itself and the text does not
/// already start with it, it is put in front. So a template that prints
/// `{{ bos_token }}` never yields two.
pub fn encode_chat_prompt(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    rendered: &str,
) -> Result<Vec<u32>> {
    let tokenizer_error = |e: tokenizers::Error| BatcherError::Tokenizer(e.to_string());
    let mut ids = tokenizer
        .encode(rendered, false)
        .map_err(tokenizer_error)?
        .get_ids()
        .to_vec();
    let bos = template
        .special
        .bos_token
        .as_deref()
        .and_then(|text| tokenizer.token_to_id(text));
    if let Some(bos) = bos {
        if ids.first() != Some(&bos) && adds_bos(tokenizer, bos)? {
            ids.insert(0, bos);
        }
    }
    Ok(ids)
}

/// Whether `tokenizer` puts `bos` in front of what it encodes with its
/// special tokens on (its post-processor, e.g. GGUF `add_bos_token`).
fn adds_bos(tokenizer: &Tokenizer, bos: u32) -> Result<bool> {
    let probe = tokenizer
        .encode("a", true)
        .map_err(|e| BatcherError::Tokenizer(e.to_string()))?;
    Ok(probe.get_ids().first() == Some(&bos))
}

/// `strftime_now(format)`: the local time, formatted (Llama 3 templates
/// print today's date).
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    jiff::fmt::strtime::format(format.as_str(), &jiff::Zoned::now()).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format: {e}"),
        )
    })
}

/// A rendering failure as a [`ChatError`]: `raise_exception`'s message as
/// given, anything else described with its place in the template.
fn render_error(error: minijinja::Error) -> ChatError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(Raised(message)) = e.downcast_ref::<Raised>() {
            return ChatError::Refused(message.clone());
        }
        cause = e.source();
    }
    ChatError::Render(describe(&error))
}

/// What went wrong and on which template line, without minijinja's debug dump.
fn describe(error: &minijinja::Error) -> String {
    let what = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    match error.line() {
        Some(line) => format!("{what} (template line {line})"),
        None => what,
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tokenizers::Tokenizer;

use super::*;
use crate::model::tiny::{scratch_dir, tiny_tokenizer_json, write_tiny_model, TINY_CHAT_TEMPLATE};

fn tiny_special() -> SpecialTokens {
    SpecialTokens {
        bos_token: Some("w1".into()),
        eos_token: Some("w0".into()),
    }
}

fn tiny_template() -> ChatTemplate {
    ChatTemplate::new(TINY_CHAT_TEMPLATE, tiny_special()).unwrap()
}

fn render(source: &str, messages: serde_json::Value) -> std::result::Result<String, ChatError> {
    ChatTemplate::new(source, tiny_special())
        .unwrap()
        .render(&messages, None, false)
}

/// The tiny word-level tokenizer, optionally with a post-processor that
/// puts BOS (`w1`) in front, as GGUF `add_bos_token` does.
fn tiny_tokenizer(adds_bos: bool) -> Tokenizer {
    let mut json: serde_json::Value = serde_json::from_str(&tiny_tokenizer_json(256)).unwrap();
    if adds_bos {
        json["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "w1", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"w1": {"id": "w1", "ids": [1], "tokens": ["w1"]}}
        });
    }
    Tokenizer::from_bytes(json.to_string()).unwrap()
}

#[test]
fn the_tiny_template_renders_chatml_in_its_vocabulary() {
    let messages = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "w5 w6"},
    ]);
    let text = tiny_template().render(&messages, None, true).unwrap();
    assert_eq!(
        text,
        "w1 w3 system\nbe brief w0\nw3 user\nw5 w6 w0\nw3 assistant\n"
    );
    let without = tiny_template().render(&messages, None, false).unwrap();
    assert_eq!(without, "w1 w3 system\nbe brief w0\nw3 user\nw5 w6 w0\n");
    let ids = encode_chat_prompt(&tiny_tokenizer(false), &tiny_template(), &text).unwrap();
    assert_eq!(ids, [1, 3, 2, 2, 2, 0, 3, 2, 5, 6, 0, 3, 2]);
}

#[test]
fn text_parts_are_joined_and_other_parts_refused() {
    let parts = json!([{"role": "user", "content": [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]}]);
    let text = render("{{ messages[0]['content'] }}", parts).unwrap();
    assert_eq!(text, "one\ntwo");

    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}]);
    let err = tiny_template().render(&image, None, true).unwrap_err();
    assert_eq!(
        err,
        ChatError::UnsupportedContent {
            path: "messages[0].content[1]".into(),
            part_type: "image_url".into()
        }
    );
    assert_eq!(err.kind(), "unsupported_content");
    assert!(
        err.to_string().contains("this model takes text only"),
        "{err}"
    );
    let audio = json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]);
    assert!(matches!(
        tiny_template().render(&audio, None, true),
        Err(ChatError::UnsupportedContent { part_type, .. }) if part_type == "input_audio"
    ));
}

#[test]
fn tools_are_refused_by_a_template_without_them() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let template = tiny_template();
    assert!(!template.uses_tools());
    assert_eq!(
        template.render(&messages, Some(&tools), true),
        Err(ChatError::ToolsUnsupported)
    );
    // No tools, or an empty list, is fine.
    assert!(template.render(&messages, Some(&json!([])), true).is_ok());
    assert!(template.render(&messages, None, true).is_ok());
}

#[test]
fn tools_reach_a_template_that_takes_them_as_python_json() {
    let template = ChatTemplate::new(
        "{% if tools %}{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% endif %}{{ tools | tojson(indent=2) }}",
        tiny_special(),
    )
    .unwrap();
    assert!(template.uses_tools());
    let tools = json!([{"type": "function", "function": {"name": "f", "description": "a < b & c", "parameters": {"x": [1, 2.5]}}}]);
    let messages = json!([{"role": "user", "content": "hi"}]);
    let text = template.render(&messages, Some(&tools), false).unwrap();
    let compact = r#"{"function": {"description": "a < b & c", "name": "f", "parameters": {"x": [1, 2.5]}}, "type": "function"}"#;
    let (first, pretty) = text.split_once('\n').unwrap();
    assert_eq!(first, compact);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(pretty).unwrap(),
        tools
    );
    assert!(
        pretty.starts_with("[\n  {\n    \"function\": {"),
        "{pretty}"
    );
}

#[test]
fn raise_exception_surfaces_the_template_message() {
    let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok";
    let err = render(source, json!([{"role": "assistant", "content": "x"}])).unwrap_err();
    assert_eq!(
        err,
        ChatError::Refused("Conversation roles must start with user".into())
    );
    assert_eq!(
        err.to_string(),
        "the chat template refused the conversation: Conversation roles must start with user"
    );
    assert_eq!(
        render(source, json!([{"role": "user", "content": "x"}])).unwrap(),
        "ok"
    );
}

#[test]
fn other_render_failures_are_described() {
    let err = render(
        "{{ messages[0]['content'] + 1 }}",
        json!([{"role": "user", "content": "x"}]),
    )
    .unwrap_err();
    assert!(matches!(err, ChatError::Render(_)), "{err:?}");
    assert_eq!(err.kind(), "template_render");
    assert_eq!(
        err.to_string(),
        "the chat template could not render the conversation: invalid operation: \
         tried to use + operator on unsupported types string and number (template line 1)"
    );
    let err = ChatTemplate::new("{% for m in messages %}", tiny_special()).unwrap_err();
    assert!(matches!(err, ChatError::InvalidTemplate(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the chat template does not parse: syntax error: unexpected end of input, \
         expected end of block (template line 1)"
    );
}

#[test]
fn python_string_methods_work() {
    let source = "{% for m in messages %}{% if m['content'].startswith('  ') %}[{{ m['content'].strip() }}]{% endif %}{{ m['role'].upper() }}{% endfor %}";
    let text = render(source, json!([{"role": "user", "content": "  padded  "}])).unwrap();
    assert_eq!(text, "[padded]USER");
}

#[test]
fn bad_messages_name_their_path() {
    let cases = [
        (json!({"role": "user"}), "messages"),
        (json!([]), "messages"),
        (json!(["hi"]), "messages[0]"),
        (json!([{"content": "hi"}]), "messages[0].role"),
        (
            json!([{"role": "user", "content": "a"}, {"role": "wizard", "content": "hi"}]),
            "messages[1].role",
        ),
        (json!([{"role": "user"}]), "messages[0].content"),
        (
            json!([{"role": "user", "content": 5}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
        ),
    ];
    for (messages, path) in cases {
        match tiny_template().render(&messages, None, true) {
            Err(ChatError::InvalidMessages { path: got, .. }) => {
                assert_eq!(got, path, "{messages}")
            }
            other => panic!("{messages}: {other:?}"),
        }
    }
    let err = tiny_template()
        .render(&json!([{"role": "wizard", "content": "x"}]), None, true)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "messages[0].role: unknown role \"wizard\"; expected system, developer, user, assistant or tool"
    );
    let err = tiny_template()
        .render(
            &json!([{"role": "user", "content": "x"}]),
            Some(&json!({"a": 1})),
            true,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "tools: must be an array");
}

#[test]
fn developer_is_system_and_tool_call_arguments_are_objects() {
    let source = "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}|{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.city }}{% endif %};{% endfor %}";
    let messages = json!([
        {"role": "developer", "content": "rules"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]);
    let text = render(source, messages).unwrap();
    assert_eq!(text, "system:rules|;assistant:|Paris;tool:sunny|;");
}

#[test]
fn a_missing_special_token_prints_nothing() {
    let template = ChatTemplate::new("[{{ bos_token }}]", SpecialTokens::default()).unwrap();
    let text = template
        .render(&json!([{"role": "user", "content": "x"}]), None, false)
        .unwrap();
    assert_eq!(text, "[]");
}

#[test]
fn bos_is_never_doubled() {
    let messages = json!([{"role": "user", "content": "w5"}]);
    let with_bos = tiny_template();
    let without_bos = ChatTemplate::new(
        "{% for m in messages %}w3 {{ m['content'] }} {% endfor %}",
        tiny_special(),
    )
    .unwrap();
    let adds = tiny_tokenizer(true);
    let plain = tiny_tokenizer(false);
    // The tokenizer adds BOS, the template prints it too: one BOS.
    let text = with_bos.render(&messages, None, true).unwrap();
    assert!(text.starts_with("w1 "));
    let ids = encode_chat_prompt(&adds, &with_bos, &text).unwrap();
    assert_eq!(ids[..2], [1, 3]);
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 1);
    // The tokenizer adds BOS, the template does not: it is put in front.
    let text = without_bos.render(&messages, None, true).unwrap();
    assert_eq!(
        encode_chat_prompt(&adds, &without_bos, &text).unwrap(),
        [1, 3, 5]
    );
    // Neither adds one: none.
    assert_eq!(
        encode_chat_prompt(&plain, &without_bos, &text).unwrap(),
        [3, 5]
    );
}

#[test]
fn the_tiny_model_loads_with_its_chat_template() {
    let dir = write_tiny_model(&scratch_dir("chat-tiny"), 3, true).unwrap();
    let model = crate::load_model(&dir, &candle_core::Device::Cpu, None).unwrap();
    let chat = model.chat.as_ref().unwrap();
    assert_eq!(chat.source(), TINY_CHAT_TEMPLATE);
    assert_eq!(chat.special_tokens(), &tiny_special());
    assert_eq!(model.runner.config().eos_token_ids, [0]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn generation_config_eos_ids_are_stop_ids() {
    let dir = write_tiny_model(&scratch_dir("chat-eos"), 3, true).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [0, 7, 9]}"#,
    )
    .unwrap();
    let model = crate::load_model(&dir, &candle_core::Device::Cpu, None).unwrap();
    assert_eq!(model.runner.config().eos_token_ids, [0, 7, 9]);
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": 11}"#,
    )
    .unwrap();
    let model = crate::load_hf_dir(&dir, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.runner.config().eos_token_ids, [0, 11]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn named_templates_and_override_files() {
    let dir = write_tiny_model(&scratch_dir("chat-named"), 3, true).unwrap();
    let config = json!({
        "bos_token": {"content": "w1", "lstrip": false},
        "eos_token": "w4",
        "chat_template": [
            {"name": "tool_use", "template": "tools {{ tools }}"},
            {"name": "default", "template": "default {{ eos_token }}"},
        ],
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let model = crate::load_model(&dir, &candle_core::Device::Cpu, None).unwrap();
    let chat = model.chat.as_ref().unwrap();
    assert_eq!(chat.source(), "default {{ eos_token }}");
    assert_eq!(chat.special_tokens().bos_token.as_deref(), Some("w1"));
    // The chat EOS token is a stop id too.
    assert_eq!(model.runner.config().eos_token_ids, [0, 4]);

    let file = dir.join("override.jinja");
    std::fs::write(&file, "override {{ bos_token }}").unwrap();
    let model = crate::load_model(&dir, &candle_core::Device::Cpu, Some(&file)).unwrap();
    let text = model
        .chat
        .unwrap()
        .render(&json!([{"role": "user", "content": "x"}]), None, false)
        .unwrap();
    assert_eq!(text, "override w1");

    // No template anywhere and no override: no chat.
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let model = crate::load_model(&dir, &candle_core::Device::Cpu, None).unwrap();
    assert!(model.chat.is_none());
    let missing = dir.join("missing.jinja");
    let err = crate::load_model(&dir, &candle_core::Device::Cpu, Some(&missing)).unwrap_err();
    assert_eq!(err.kind(), "io");
    std::fs::remove_dir_all(dir).unwrap();
}

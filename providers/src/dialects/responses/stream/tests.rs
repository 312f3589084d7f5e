//! Tests of the event stream: chat chunks fed in 7-byte pieces.

use super::*;

fn request(stream: bool) -> ResponsesRequest {
    let body = json!({"model": "m", "input": "hi", "stream": stream, "instructions": "terse",
                      "tools": [{"type": "function", "name": "get", "parameters": {}}]});
    ResponsesRequest::parse(body.to_string().as_bytes()).unwrap()
}

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";

/// Feeds `chat` in 7-byte pieces and returns the events' payloads.
fn run(writer: &mut ResponsesWriter, chat: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for piece in chat.as_bytes().chunks(7) {
        out.extend_from_slice(&writer.feed(piece));
    }
    out.extend_from_slice(&writer.finish());
    parse_events(&out)
}

fn parse_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    text.split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
            data
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[test]
fn a_text_stream_becomes_the_responses_event_sequence() {
    let chat = format!(
        "{}{}{}{}{USAGE}data: [DONE]\n\n",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(json!({}), json!("stop")),
    );
    let mut writer = ResponsesWriter::new(true, "resp_t1", "m", &request(true));
    let events = run(&mut writer, &chat);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n as u64);
    }
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["instructions"], "terse");
    assert_eq!(events[4]["item_id"], "msg_t1_0");
    assert_eq!(events[6]["text"], "Hello");
    let done = &events[9]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["usage"]["input_tokens"], 7);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(done["usage"]["output_tokens"], 3);
    assert!(writer.done());
    assert_eq!(
        writer.output_items(),
        done["output"].as_array().unwrap().as_slice()
    );
}

#[test]
fn tool_calls_become_function_call_items_after_the_text() {
    let chat = format!(
        "{}{}{}{}{}{}data: [DONE]\n\n",
        chunk(json!({"content": "Checking."}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                     "function": {"name": "get", "arguments": ""}}]}),
            Value::Null
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"c\":"}}]}),
            Value::Null
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                     "function": {"name": "get", "arguments": "{}"}}]}),
            Value::Null
        ),
        chunk(json!({}), json!("tool_calls")),
    );
    let mut writer = ResponsesWriter::new(true, "resp_t2", "m", &request(true));
    let events = run(&mut writer, &chat);
    assert_eq!(
        types(&events)[2..],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[8]["item"]["call_id"], "call_a");
    assert_eq!(events[8]["output_index"], 1);
    assert_eq!(events[13]["arguments"], "{\"c\":1}");
    let output = &events.last().unwrap()["response"]["output"];
    assert_eq!(output[1]["arguments"], "{\"c\":1}");
    assert_eq!(output[2]["call_id"], "call_b");
    assert_eq!(output[2]["id"], "fc_t2_2");
    assert_eq!(writer.output_items().len(), 3);
}

#[test]
fn an_upstream_error_becomes_error_then_response_failed() {
    let chat = format!(
        "{}data: {{\"error\":{{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null}}}}\n\n",
        chunk(json!({"content": "a"}), Value::Null)
    );
    let mut writer = ResponsesWriter::new(true, "resp_t3", "m", &request(true));
    let events = run(&mut writer, &chat);
    let n = events.len();
    assert_eq!(types(&events)[n - 2..], ["error", "response.failed"]);
    assert_eq!(events[n - 2]["code"], "server_error");
    assert_eq!(events[n - 2]["message"], "overloaded");
    assert_eq!(events[n - 1]["response"]["status"], "failed");
    assert_eq!(events[n - 1]["sequence_number"], n as u64 - 1);
    assert!(!writer.done());
}

#[test]
fn a_cut_stream_fails_and_close_ends_incomplete() {
    let mut writer = ResponsesWriter::new(true, "resp_t4", "m", &request(true));
    let events = run(&mut writer, &chunk(json!({"content": "a"}), Value::Null));
    assert_eq!(types(&events).last(), Some(&"response.failed"));

    let mut writer = ResponsesWriter::new(true, "resp_t5", "m", &request(true));
    let mut out = writer
        .feed(chunk(json!({"content": "partial"}), Value::Null).as_bytes())
        .to_vec();
    out.extend_from_slice(&writer.close("incomplete", Some("max_output_tokens")));
    assert!(writer.finish().is_empty());
    let events = parse_events(&out);
    assert_eq!(
        types(&events)[5..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete"
        ]
    );
    let response = &events.last().unwrap()["response"];
    assert_eq!(
        response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert!(writer.done());
}

#[test]
fn a_whole_completion_fed_in_pieces_becomes_a_response() {
    let body = json!({"id": "c", "object": "chat.completion", "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    .to_string();
    let mut writer = ResponsesWriter::new(false, "resp_w", "m", &request(false));
    for piece in body.as_bytes().chunks(7) {
        assert!(writer.feed(piece).is_empty());
    }
    let response: Value = serde_json::from_slice(&writer.finish()).unwrap();
    assert_eq!(response["id"], "resp_w");
    assert_eq!(response["object"], "response");
    assert_eq!(response["model"], "m");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(response["usage"]["total_tokens"], 7);
    assert_eq!(response["tools"][0]["name"], "get");
    assert!(writer.done());
    assert_eq!(writer.output_items().len(), 1);

    let mut writer = ResponsesWriter::new(false, "resp_e", "m", &request(false));
    let error = br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#;
    writer.feed(error);
    assert_eq!(&writer.finish()[..], error);
    assert!(!writer.done());
}

//! `POST /v1/responses`: OpenAI's Responses API, as the mock upstream
//! speaks it. The text is the chat mock's (`tok0 tok1 ...`, one piece per
//! `x-mock-chunks`); with tools in the request and the chat mock's tool hint
//! (`x-mock-tool-call: NAME` or `mock-tool-call:NAME` in the text) it
//! answers with one `function_call` item whose arguments are
//! `{"input":"tok0 tok1 ..."}`. Input tokens are counted as the chat mock
//! counts prompt tokens. A `previous_response_id` the mock did not return
//! earlier (with `store` on) is answered 400 `previous_response_not_found`.

use crate::mock_body::{content_piece, prompt_tokens, Reply, SseStream, StreamPlan};
use crate::mock_providers::Hints;
use crate::MockStats;
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn bad_request(message: &str, param: Value, code: Value) -> Reply {
    Reply::BadRequest(Bytes::from(
        json!({"error": {"message": message, "type": "invalid_request_error",
                         "param": param, "code": code}})
        .to_string(),
    ))
}

/// What the Response object echoes from the request, with API defaults.
fn echoed(req: &Value, field: &str, default: Value) -> Value {
    match &req[field] {
        Value::Null => default,
        value => value.clone(),
    }
}

/// `POST /v1/responses`.
pub(crate) fn reply(body: &[u8], plan: StreamPlan, hints: &Hints, stats: Arc<MockStats>) -> Reply {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad_request("mock: body is not JSON", Value::Null, Value::Null);
    };
    let Some(model) = req["model"].as_str() else {
        return bad_request(
            "mock: you must provide a model parameter",
            json!("model"),
            Value::Null,
        );
    };
    if let Some(previous) = req["previous_response_id"].as_str() {
        if !stats.knows_response(previous) {
            return bad_request(
                &format!("Previous response with id '{previous}' not found."),
                json!("previous_response_id"),
                json!("previous_response_not_found"),
            );
        }
    }
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let id = format!("resp_mock{n}");
    if req["store"].as_bool() != Some(false) {
        stats.remember_response(&id);
    }
    let has_tools = req["tools"].as_array().is_some_and(|t| !t.is_empty());
    let tool = hints.tool_call.as_deref().filter(|_| has_tools);
    let pieces: Vec<String> = (0..plan.chunks).map(content_piece).collect();
    let text: String = pieces.concat();
    let prompt = prompt_tokens(body);
    let usage = (!plan.no_usage).then(|| {
        json!({"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": plan.chunks, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": prompt + plan.chunks as u64})
    });
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let response = |status: &str, output: Vec<Value>, usage: Option<&Value>| {
        json!({
            "id": id, "object": "response", "created_at": created, "status": status,
            "error": null, "incomplete_details": null,
            "instructions": echoed(&req, "instructions", Value::Null),
            "max_output_tokens": echoed(&req, "max_output_tokens", Value::Null),
            "model": model, "output": output,
            "parallel_tool_calls": echoed(&req, "parallel_tool_calls", json!(true)),
            "previous_response_id": echoed(&req, "previous_response_id", Value::Null),
            "reasoning": {"effort": null, "summary": null},
            "store": echoed(&req, "store", json!(true)),
            "temperature": echoed(&req, "temperature", json!(1.0)),
            "text": echoed(&req, "text", json!({"format": {"type": "text"}})),
            "tool_choice": echoed(&req, "tool_choice", json!("auto")),
            "tools": echoed(&req, "tools", json!([])),
            "top_p": echoed(&req, "top_p", json!(1.0)),
            "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
        })
    };
    let item_id = format!("{}_mock{n}", if tool.is_some() { "fc" } else { "msg" });
    let arguments = json!({"input": text}).to_string();
    let item = |status: &str, content: &str| match tool {
        Some(name) => {
            json!({"type": "function_call", "id": item_id, "call_id": format!("call_mock{n}"),
                             "name": name, "arguments": content, "status": status})
        }
        None => json!({"type": "message", "id": item_id, "status": status, "role": "assistant",
                       "content": if status == "completed" { vec![part(content)] } else { Vec::new() }}),
    };
    let done_item = item("completed", if tool.is_some() { &arguments } else { &text });
    if !req["stream"].as_bool().unwrap_or(false) {
        let whole = response("completed", vec![done_item], usage.as_ref());
        return Reply::Json(Bytes::from(whole.to_string()));
    }
    let started = response("in_progress", Vec::new(), None);
    let mut events = vec![
        json!({"type": "response.created", "response": started}),
        json!({"type": "response.in_progress", "response": started}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": item("in_progress", "")}),
    ];
    match tool {
        Some(_) => {
            let chars: Vec<char> = arguments.chars().collect();
            let size = chars.len().div_ceil(plan.chunks.max(1));
            events.extend(chars.chunks(size.max(1)).map(|c| {
                json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                       "output_index": 0, "delta": c.iter().collect::<String>()})
            }));
            events.push(
                json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                               "output_index": 0, "arguments": arguments}),
            );
        }
        None => {
            events.push(
                json!({"type": "response.content_part.added", "item_id": item_id,
                               "output_index": 0, "content_index": 0, "part": part("")}),
            );
            events.extend(pieces.iter().map(|p| {
                json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "delta": p, "logprobs": []})
            }));
            events.push(json!({"type": "response.output_text.done", "item_id": item_id,
                               "output_index": 0, "content_index": 0, "text": text, "logprobs": []}));
            events.push(
                json!({"type": "response.content_part.done", "item_id": item_id,
                               "output_index": 0, "content_index": 0, "part": part(&text)}),
            );
        }
    }
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": done_item}));
    events.push(json!({"type": "response.completed",
                       "response": response("completed", vec![done_item.clone()], usage.as_ref())}));
    Reply::Sse(sse(events, plan, stats))
}

fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// Frames `events` as Responses SSE (`event:` + `data:`, numbered by
/// `sequence_number`, no `[DONE]`), each after `plan.chunk_delay`.
fn sse(events: Vec<Value>, plan: StreamPlan, stats: Arc<MockStats>) -> SseStream {
    let frames: Vec<Bytes> = events
        .into_iter()
        .enumerate()
        .map(|(n, mut event)| {
            event["sequence_number"] = json!(n);
            let kind = event["type"].as_str().unwrap_or("").to_string();
            Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
        })
        .collect();
    Box::pin(futures_util::stream::unfold(
        frames.into_iter(),
        move |mut frames| {
            let stats = stats.clone();
            async move {
                if !plan.chunk_delay.is_zero() {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                let frame = frames.next()?;
                if frames.len() == 0 {
                    stats.streams_finished.fetch_add(1, Ordering::SeqCst);
                }
                Some((Ok(Frame::data(frame)), frames))
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use crate::{MockOptions, MockUpstream};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::{json, Value};

    /// POSTs `body` to the mock's `/v1/responses`: status and body text.
    async fn post(mock: &MockUpstream, body: Value) -> (u16, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = http::Request::post(format!("{}/responses", mock.base_url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn events(sse: &str) -> Vec<Value> {
        sse.split_terminator("\n\n")
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
                data
            })
            .collect()
    }

    #[tokio::test]
    async fn answers_text_whole_and_streamed_and_checks_previous_ids() {
        let mock = MockUpstream::start(MockOptions {
            chunks: 3,
            ..MockOptions::default()
        })
        .await
        .unwrap();
        let request = json!({"model": "m", "input": "hello"});
        let (status, body) = post(&mock, request.clone()).await;
        assert_eq!(status, 200);
        let response: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(response["object"], "response");
        assert_eq!(
            response["output"][0]["content"][0]["text"],
            "tok0 tok1 tok2 "
        );
        let prompt = (request.to_string().len() as u64).div_ceil(4);
        assert_eq!(response["usage"]["input_tokens"], prompt);
        assert_eq!(response["usage"]["output_tokens"], 3);

        let id = response["id"].as_str().unwrap();
        let follow =
            json!({"model": "m", "input": "again", "stream": true, "previous_response_id": id});
        let (status, sse) = post(&mock, follow).await;
        assert_eq!(status, 200);
        let events = events(&sse);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "response.output_text.delta")
                .count(),
            3
        );
        assert_eq!(kinds.last(), Some(&"response.completed"));
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], n as u64);
        }
        assert_eq!(
            events.last().unwrap()["response"]["previous_response_id"],
            id
        );

        let (status, body) = post(
            &mock,
            json!({"model": "m", "input": "x",
                                                "previous_response_id": "resp_unknown"}),
        )
        .await;
        assert_eq!(status, 400);
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "previous_response_not_found");
        assert_eq!(error["error"]["param"], "previous_response_id");
    }

    #[tokio::test]
    async fn answers_a_function_call_when_tools_and_the_hint_are_present() {
        let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
        let tools =
            json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
        let request =
            json!({"model": "m", "input": "please mock-tool-call:lookup", "tools": tools});
        let (_, body) = post(&mock, request).await;
        let item = &serde_json::from_str::<Value>(&body).unwrap()["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["name"], "lookup");
        let args: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"input": "tok0 tok1 tok2 tok3 tok4 "}));

        let stream = json!({"model": "m", "input": "please mock-tool-call:lookup", "tools": tools, "stream": true});
        let (_, sse) = post(&mock, stream).await;
        let events = events(&sse);
        let arguments: String = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(arguments, item["arguments"].as_str().unwrap());
        assert_eq!(
            events.last().unwrap()["response"]["output"][0]["name"],
            "lookup"
        );

        // Without tools in the request the hint alone gives text.
        let (_, body) = post(
            &mock,
            json!({"model": "m", "input": "mock-tool-call:lookup"}),
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["output"][0]["type"],
            "message"
        );
    }
}

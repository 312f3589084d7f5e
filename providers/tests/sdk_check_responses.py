"""Serves ResponsesWriter output to the real OpenAI Python SDK.

Run:
    cargo test -p sluice-providers --test responses_dialect dumps_replies_for_the_sdk_check
    python3 providers/tests/sdk_check_responses.py [DIR]

DIR defaults to $TMPDIR/sluice-responses-sdk (where the test writes). A tiny
http.server on 127.0.0.1 answers POST /v1/responses with the dumped bytes:
the file is picked by whether the request streams and has tools. Then
`responses.create` (whole and stream=True) and `responses.stream(...)` +
`get_final_response()` must parse them: output_text, function_call items
and usage.
"""

import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import openai

DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "sluice-responses-sdk")
TOOLS = [{"type": "function", "name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert self.path == "/v1/responses", self.path
        name = ("tool" if body.get("tools") else "text") + (".sse" if body.get("stream") else ".json")
        with open(os.path.join(DIR, name), "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if name.endswith(".sse") else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def check_usage(usage):
    assert usage.input_tokens == 11, usage
    assert usage.output_tokens == 4, usage
    assert usage.total_tokens == 15, usage


def check_tool_call(response):
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    assert calls[0].call_id == "call_1" and calls[0].name == "get_weather", calls[0]
    assert json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0].arguments


def main():
    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="x", max_retries=0)

    r = client.responses.create(model="m", input="hi")
    assert r.output_text == "Hello world", r.output_text
    assert r.status == "completed"
    check_usage(r.usage)
    assert r.usage.input_tokens_details.cached_tokens == 3

    r = client.responses.create(model="m", input="hi", tools=TOOLS)
    check_tool_call(r)
    check_usage(r.usage)

    events = list(client.responses.create(model="m", input="hi", stream=True))
    assert events[0].type == "response.created", events[0]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello world", text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello world"
    check_usage(events[-1].response.usage)

    with client.responses.stream(model="m", input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Hello world", final.output_text
    check_usage(final.usage)

    with client.responses.stream(model="m", input="hi", tools=TOOLS) as stream:
        deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert deltas and deltas[-1].snapshot == '{"city":"Paris"}', deltas
    assert final.output_text == "Checking.", final.output_text
    check_tool_call(final)
    check_usage(final.usage)

    server.shutdown()
    print("sdk check passed (openai", openai.__version__ + ")")


if __name__ == "__main__":
    main()

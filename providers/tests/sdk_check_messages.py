"""Dev check: the Anthropic Python SDK reads sluice's Messages replies.

Feeds the bytes MessagesWriter emitted for the golden OpenAI reply (see
providers/tests/messages_dialect.rs) through the real `anthropic` SDK, offline:
a tiny HTTP server on 127.0.0.1 serves them at /v1/messages, and the SDK's
`messages.stream(...).get_final_message()` and `messages.create(...)` must
rebuild the expected text, tool_use input, usage and stop_reason.

Run from the repository root:

    SLUICE_MESSAGES_DUMP=/tmp/sluice-messages \
        cargo test -p sluice-providers --test messages_dialect
    python3 providers/tests/sdk_check_messages.py /tmp/sluice-messages

Needs `pip install anthropic`; exits non-zero on any mismatch.
"""

import http.server
import pathlib
import sys
import threading

import anthropic


def serve(dump: pathlib.Path) -> http.server.HTTPServer:
    stream = (dump / "stream.sse").read_bytes()
    whole = (dump / "message.json").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            streaming = b'"stream":true' in body.replace(b" ", b"")
            payload = stream if streaming else whole
            self.send_response(200)
            ctype = "text/event-stream" if streaming else "application/json"
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check(message, how: str) -> None:
    assert message.stop_reason == "tool_use", (how, message.stop_reason)
    assert message.model == "claude-sonnet-4-5", (how, message.model)
    kinds = [block.type for block in message.content]
    assert kinds == ["text", "tool_use"], (how, kinds)
    assert message.content[0].text == "I'll check the weather.", (how, message.content[0])
    tool = message.content[1]
    assert tool.id == "call_abc" and tool.name == "get_weather", (how, tool)
    assert tool.input == {"city": "Paris"}, (how, tool.input)
    usage = message.usage
    assert usage.input_tokens == 100, (how, usage)
    assert usage.output_tokens == 25, (how, usage)
    assert usage.cache_read_input_tokens == 1800, (how, usage)
    assert usage.cache_creation_input_tokens == 200, (how, usage)
    print(f"{how}: ok ({message.id}, {len(message.content)} blocks, {usage})")


def main() -> None:
    dump = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sluice-messages")
    server = serve(dump)
    client = anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        api_key="x",
        max_retries=0,
    )
    request = dict(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    with client.messages.stream(**request) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "I'll check the weather.", texts
    check(final, "stream")
    check(client.messages.create(**request), "whole")
    server.shutdown()


if __name__ == "__main__":
    main()

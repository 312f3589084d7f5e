"""The official OpenAI Python SDK against sluice, one model per provider.

Run by proxy/tests/sdk.rs with the gateway's base URL; every provider sits
behind the mock upstream, speaking its own wire format, and must come back
as the same OpenAI objects. Exits non-zero with a message on any mismatch.
"""

import json
import os
import sys
import urllib.request

import openai
from openai import OpenAI

base_url = sys.argv[1]
# The stream control API (`/v1/streams`) is on sluice's admin listener.
admin_url = os.environ.get("SLUICE_ADMIN_URL", base_url)
models = sys.argv[2].split(",")
client = OpenAI(base_url=base_url, api_key="sk-unused", max_retries=0)
expected_text = "tok0 tok1 tok2 tok3 tok4 "
tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"input": {"type": "string"}}}}}]
messages = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say the tokens."}]
# Translated providers do not forward client headers, so the mock's hints
# ride in the message text (the mock reads `mock-tool-call:NAME` and
# `mock-status:NNN` from any request body).
tool_messages = [{"role": "user", "content": "Look it up. mock-tool-call:lookup"}]
limited_messages = [{"role": "user", "content": "Hello. mock-status:429"}]


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


for model in models:
    # Plain chat.
    reply = client.chat.completions.create(model=model, messages=messages)
    check(reply.choices[0].message.content == expected_text,
          f"{model}: content {reply.choices[0].message.content!r}")
    check(reply.choices[0].finish_reason == "stop", f"{model}: finish {reply.choices[0].finish_reason}")
    check(reply.usage is not None and reply.usage.completion_tokens > 0, f"{model}: usage {reply.usage}")

    # Streamed chat, with usage asked for.
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(text == expected_text, f"{model}: streamed {text!r}")
    check(finish == "stop", f"{model}: streamed finish {finish}")
    check(usage is not None and usage.completion_tokens > 0, f"{model}: streamed usage {usage}")

    # A tool call, whole.
    reply = client.chat.completions.create(model=model, messages=tool_messages, tools=tools)
    calls = reply.choices[0].message.tool_calls
    check(calls and calls[0].function.name == "lookup", f"{model}: tool calls {calls}")
    check(json.loads(calls[0].function.arguments) == {"input": expected_text},
          f"{model}: tool arguments {calls[0].function.arguments!r}")
    check(reply.choices[0].finish_reason == "tool_calls", f"{model}: tool finish")

    # A tool call, streamed: argument deltas reassembled by index.
    stream = client.chat.completions.create(
        model=model, messages=tool_messages, tools=tools, stream=True)
    name, arguments = None, ""
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                arguments += call.function.arguments or ""
    check(name == "lookup", f"{model}: streamed tool name {name}")
    check(json.loads(arguments) == {"input": expected_text}, f"{model}: streamed arguments {arguments!r}")

    # Errors arrive as the SDK's own exception types.
    try:
        client.chat.completions.create(model=model, messages=limited_messages)
        check(False, f"{model}: 429 raised nothing")
    except openai.RateLimitError:
        pass

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    check(False, "unknown model raised nothing")
except openai.NotFoundError as e:
    check(e.code == "model_not_found", f"unknown model code {e.code}")

# A stream cancelled through sluice's control API ends as a normal stream
# for the SDK: no exception, a finish_reason, and the notice chunk's extra
# `sluice` object readable through pydantic's extras.

stream = client.chat.completions.create(
    model=models[0], messages=messages, stream=True,
    extra_headers={"x-mock-chunks": "200", "x-mock-chunk-delay-ms": "20"})
stream_id = stream.response.headers["x-sluice-stream-id"]
text, finish, notice, cancelled = "", None, None, False
for chunk in stream:
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
    extra = (chunk.model_extra or {}).get("sluice")
    notice = extra or notice
    if not cancelled and "tok1" in text:
        call = urllib.request.Request(f"{admin_url}/streams/{stream_id}/cancel", method="POST",
                                      headers={"Authorization": "Bearer sk-unused"})
        with urllib.request.urlopen(call) as reply:
            check(reply.status == 200, f"cancel answered {reply.status}")
        cancelled = True
check(cancelled and "tok199" not in text, f"cancel did not stop the stream: {text[-40:]!r}")
check(finish == "stop", f"cancelled stream finish {finish}")
check(notice and notice["cause"] == "api" and notice["stream_id"] == stream_id,
      f"cancel notice {notice}")

print(f"ok: {len(models)} providers")

"""The official Anthropic Python SDK, unchanged, against sluice's /v1/messages.

Usage: anthropic_sdk_e2e.py <sluice base url ending in /v1> <model,model,...> [engine]

Every model is served by a different provider through the mock upstream (or,
with `engine`, by the built-in engine, whose random-weight text is not
checked). Plain and streamed messages, a tool-use round trip, count_tokens,
and errors raised as the SDK's own exceptions.
"""

import sys

import anthropic

base = sys.argv[1].removesuffix("/v1")
models = sys.argv[2].split(",")
engine = len(sys.argv) > 3 and sys.argv[3] == "engine"
client = anthropic.Anthropic(base_url=base, api_key="sk-test", max_retries=0)

TOOLS = [
    {
        "name": "lookup",
        "description": "Look a word up.",
        "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}},
    }
]


def check_text(text, where):
    if engine:
        assert isinstance(text, str), where
    else:
        assert text.startswith("tok0"), f"{where}: {text!r}"


for model in models:
    # Plain, with a cached system prompt.
    message = client.messages.create(
        model=model,
        max_tokens=32,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hi"}],
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.content[0].type == "text", message
    check_text(message.content[0].text, f"{model} plain")
    assert message.stop_reason in ("end_turn", "max_tokens"), message
    assert message.usage.output_tokens > 0, message

    # Streamed: text deltas add up to the final message.
    with client.messages.stream(
        model=model, max_tokens=32, messages=[{"role": "user", "content": "Say hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content and final.content[0].text == text, (text, final)
    check_text(text, f"{model} streamed")
    assert final.usage.output_tokens > 0, final
    assert final.stop_reason in ("end_turn", "max_tokens"), final

    # Raw event sequence, in Anthropic's order.
    events = [
        e.type
        for e in client.messages.create(
            model=model,
            max_tokens=16,
            messages=[{"role": "user", "content": "Say hi"}],
            stream=True,
        )
    ]
    assert events[0] == "message_start", events
    assert events[-1] == "message_stop", events
    assert events[-2] == "message_delta", events

    if not engine:
        # Tool use, whole and streamed, then the tool's result sent back.
        asked = [{"role": "user", "content": "mock-tool-call:lookup please"}]
        message = client.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=asked)
        assert message.stop_reason == "tool_use", message
        use = [b for b in message.content if b.type == "tool_use"][0]
        assert use.name == "lookup" and use.input["input"].startswith("tok0"), use
        with client.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=asked) as stream:
            final = stream.get_final_message()
        streamed = [b for b in final.content if b.type == "tool_use"][0]
        assert streamed.name == "lookup" and streamed.input == use.input, (streamed, use)
        follow = client.messages.create(
            model=model,
            max_tokens=64,
            tools=TOOLS,
            messages=asked
            + [
                {"role": "assistant", "content": message.content},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
                },
            ],
        )
        assert follow.type == "message", follow

    # Token counting.
    counted = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "Say hi to everyone here"}]
    )
    assert counted.input_tokens > 0, counted

# Errors come back as the SDK's own exceptions, in Anthropic's shape.
try:
    client.messages.create(
        model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("unknown model accepted")
except anthropic.NotFoundError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body

print(f"ok: {len(models)} providers")

"""The official OpenAI Python SDK's Responses API, unchanged, against sluice.

Usage: openai_responses_e2e.py <sluice base url ending in /v1> <model,...> [engine]

Every model is served by a different provider through the mock upstream (or,
with `engine`, by the built-in engine, whose random-weight text is not
checked): plain and streamed responses, the streaming helper, a
function-call round trip continued with previous_response_id, and errors as
the SDK's own exceptions.
"""

import sys

import openai

base = sys.argv[1]
models = sys.argv[2].split(",")
engine = len(sys.argv) > 3 and sys.argv[3] == "engine"
client = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0)

TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
    }
]


def check_text(text, where):
    if engine:
        assert isinstance(text, str), where
    else:
        assert text.startswith("tok0"), f"{where}: {text!r}"


for model in models:
    response = client.responses.create(
        model=model, input="Say hi", instructions="Be brief.", max_output_tokens=32
    )
    assert response.object == "response", response
    assert response.status in ("completed", "incomplete"), response
    check_text(response.output_text, f"{model} plain")
    assert response.usage.output_tokens > 0, response

    # Streamed: the raw event sequence.
    deltas, types, completed = [], [], None
    for event in client.responses.create(model=model, input="Say hi", stream=True, max_output_tokens=32):
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type in ("response.completed", "response.incomplete"):
            completed = event.response
    assert types[0] == "response.created", types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    assert completed is not None and completed.output_text == "".join(deltas), (completed, deltas)
    check_text("".join(deltas), f"{model} streamed")
    assert completed.usage.output_tokens > 0, completed

    # The SDK's streaming helper accumulates the same response.
    # (A reply cut at max_output_tokens ends with response.incomplete, for
    # which the helper has no final response: the engine's random text
    # never stops by itself.)
    with client.responses.stream(model=model, input="Say hi", max_output_tokens=32) as stream:
        last = None
        for event in stream:
            last = event
        if last.type == "response.completed":
            check_text(stream.get_final_response().output_text, f"{model} helper")
        else:
            assert engine and last.type == "response.incomplete", last

    if not engine:
        # A function call, its output sent back as a continuation.
        first = client.responses.create(
            model=model, input="mock-tool-call:lookup please", tools=TOOLS
        )
        calls = [o for o in first.output if o.type == "function_call"]
        assert calls and calls[0].name == "lookup", first
        assert calls[0].arguments.startswith('{"input":"tok0'), calls[0]
        second = client.responses.create(
            model=model,
            previous_response_id=first.id,
            tools=TOOLS,
            input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "42"}],
        )
        assert second.status == "completed", second
        assert second.previous_response_id == first.id, second

        # Streamed function call.
        with client.responses.stream(
            model=model, input="mock-tool-call:lookup please", tools=TOOLS
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        streamed = [o for o in final.output if o.type == "function_call"]
        assert streamed and streamed[0].arguments == calls[0].arguments, (streamed, calls)

# Errors come back as the SDK's own exceptions.
try:
    client.responses.create(model="no-such-model", input="x")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.responses.create(model=models[-1], input="x", previous_response_id="resp_nobody")
    raise AssertionError("unknown previous_response_id accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "previous_response_not_found", e.body

print(f"ok: {len(models)} providers")

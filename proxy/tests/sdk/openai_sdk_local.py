"""The official OpenAI Python SDK against sluice's built-in engine.

Run by proxy/tests/sdk.rs with the gateway's base URL and a model served by
a `kind: local` upstream (the tiny generated model): plain, streamed and
legacy completions come back as the SDK's own objects, and content the
model cannot take is raised as the SDK's BadRequestError.
"""

import sys

import openai
from openai import OpenAI

base_url, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key="sk-unused", max_retries=0)
messages = [{"role": "system", "content": "w4"}, {"role": "user", "content": "w5 w6"}]
always = {"ignore_eos": True}


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


reply = client.chat.completions.create(model=model, messages=messages, max_tokens=5, extra_body=always)
check(reply.object == "chat.completion", f"object {reply.object}")
check(reply.choices[0].message.role == "assistant", "role")
check(reply.choices[0].finish_reason == "length", f"finish {reply.choices[0].finish_reason}")
check(reply.usage.completion_tokens == 5, f"usage {reply.usage}")

stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=7, stream=True,
    stream_options={"include_usage": True}, extra_body=always)
text, usage, finish = "", None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
check(text.strip() != "", "streamed text")
check(finish == "length", f"streamed finish {finish}")
check(usage is not None and usage.completion_tokens == 7, f"streamed usage {usage}")

legacy = client.completions.create(model=model, prompt="w9 w10", max_tokens=3, extra_body=always)
check(legacy.object == "text_completion", f"object {legacy.object}")
check(legacy.usage.completion_tokens == 3, f"usage {legacy.usage}")

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    check(False, "an image to a text model must be refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body["param"] == "messages", f"error {e.body}")

print("ok: built-in engine")

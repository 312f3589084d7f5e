"""Stream an answer from sluice's built-in engine with the official OpenAI SDK.

Start sluice with the README's first command (`cargo run --release`), then:

    python3 -m pip install openai
    python3 examples/openai_stream.py "Why is the sky blue?"

The SDK is used unchanged: only base_url points at sluice. With no config,
sluice serves SmolLM2-135M-Instruct as `smollm2-135m-instruct`.
"""

import sys

from openai import OpenAI

base_url = "http://127.0.0.1:8080/v1"
question = " ".join(sys.argv[1:]) or "Name three primary colours, briefly."
client = OpenAI(base_url=base_url, api_key="no-key-needed-for-the-default-config")

stream = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": question}],
    max_tokens=120,
    temperature=0.2,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    for choice in chunk.choices:
        print(choice.delta.content or "", end="", flush=True)
    if chunk.usage is not None:
        print(f"\n[{chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens]")

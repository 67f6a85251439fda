# The openai Python SDK through till: the key it holds is a dummy.
#   pip install openai && python app.py
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/openai/v1"),
    api_key="not-a-real-key",  # till replaces it with the key from its vault
)
reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello"}],
)
print(reply.choices[0].message.content)

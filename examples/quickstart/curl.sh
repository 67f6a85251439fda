#!/bin/sh
# The app holds no key: till attaches it.
curl -sS http://127.0.0.1:8080/openai/v1/chat/completions \
  -H 'Content-Type: application/json' \
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}'

"""The Anthropic Messages API: request translation to the OpenAI chat shape, the reply and
the SSE event sequence back. Imports nothing of ours."""

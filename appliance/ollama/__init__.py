"""The Ollama API (`/api/chat`, `/api/generate`, `/api/tags`, `/api/embed`, ...): request
translation to the OpenAI chat shape, replies and NDJSON streams back. Imports nothing of ours."""

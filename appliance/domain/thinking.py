"""Telling a backend whether to think, in the field it reads (the `thinking` extension of
`appliance.wire.thinking`, fitted per backend when a request is planned).

`Capabilities.thinking`, by backend kind (overridable in the catalog):

| mode                   | kinds            | thinking on                       | thinking off                       |
|------------------------|------------------|-----------------------------------|------------------------------------|
| `chat_template_kwargs` | vllm, llamacpp   | `enable_thinking: true`           | `enable_thinking: false`           |
| `reasoning_effort`     | ollama, lmstudio | the effort (`medium` if unsaid)   | `"none"`                           |
| `reasoning_effort_on`  | openai           | the effort, if one was said       | nothing: older reasoning models refuse `"none"` |
| `none`                 | -                | nothing                           | nothing                            |

Qwen3, DeepSeek and the other hybrid models' chat templates read `enable_thinking` (vLLM and
llama.cpp pass `chat_template_kwargs` to the template); Ollama's and LM Studio's OpenAI
endpoints read `reasoning_effort`, and Ollama turns thinking off for `"none"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

MODES: Final = ("chat_template_kwargs", "reasoning_effort", "reasoning_effort_on", "none")


def thinking_fields(wish: Mapping[str, Any], mode: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The fields to add to `payload` (which they may extend, not replace) for `wish`."""
    on, effort = bool(wish.get("on")), wish.get("effort")
    if mode == "chat_template_kwargs":
        given = payload.get("chat_template_kwargs")
        kwargs = dict(given) if isinstance(given, Mapping) else {}
        kwargs["enable_thinking"] = on
        return {"chat_template_kwargs": kwargs}
    if mode == "reasoning_effort":
        return {"reasoning_effort": (effort or "medium") if on else "none"}
    if mode == "reasoning_effort_on" and on and effort:
        return {"reasoning_effort": effort}
    return {}

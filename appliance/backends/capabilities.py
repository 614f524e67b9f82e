"""What each kind of backend takes beyond the OpenAI chat schema, decided once per backend.

| kind     | extension fields                         | fetches image URLs | /v1/completions | /tokenize |
|----------|------------------------------------------|--------------------|-----------------|-----------|
| vllm     | top_k, min_p, repetition_penalty         | yes                | yes             | yes       |
| llamacpp | top_k, min_p, repeat_penalty, typical_p  | no                 | yes             | yes       |
| lmstudio | top_k, min_p, repeat_penalty             | no                 | yes             | no        |
| ollama   | top_k, min_p, repeat_penalty             | no                 | yes             | no        |
| openai   | none (a cloud API refuses unknown fields)| yes                | no              | no        |

How each is told to think or not (`thinking`): `chat_template_kwargs` for vllm and llamacpp,
`reasoning_effort` for lmstudio and ollama, `reasoning_effort_on` for openai (domain/thinking.py).

A catalog backend's `capabilities` table overrides any column (`extension_fields = []`
for a local server behind a strict proxy, say).
"""

from __future__ import annotations

from typing import Final

from appliance.catalog import BackendConfig
from appliance.domain.ports import Capabilities

_LOCAL_SAMPLING: Final = frozenset({"top_k", "min_p", "repeat_penalty"})
BY_KIND: Final = {
    "vllm": Capabilities(frozenset({"top_k", "min_p", "repetition_penalty"}), fetches_image_urls=True,
                         completions=True, tokenize=True, local=True, thinking="chat_template_kwargs"),
    "llamacpp": Capabilities(_LOCAL_SAMPLING | {"typical_p"}, fetches_image_urls=False, completions=True,
                             tokenize=True, local=True, thinking="chat_template_kwargs"),
    "lmstudio": Capabilities(_LOCAL_SAMPLING, fetches_image_urls=False, completions=True, local=True,
                             thinking="reasoning_effort"),
    "ollama": Capabilities(_LOCAL_SAMPLING, fetches_image_urls=False, completions=True, local=True,
                           thinking="reasoning_effort"),
    "openai": Capabilities(frozenset(), fetches_image_urls=True),
}


def capabilities_of(backend: BackendConfig) -> Capabilities:
    base = BY_KIND[backend.kind]
    given = backend.capabilities
    return Capabilities(
        frozenset(given.extension_fields) if given.extension_fields is not None else base.extension_fields,
        base.fetches_image_urls if given.fetches_image_urls is None else given.fetches_image_urls,
        base.completions if given.completions is None else given.completions,
        base.tokenize if given.tokenize is None else given.tokenize,
        local=base.local,
        provider=backend.kind,
        gpu_hour_usd=backend.gpu_hour_usd or 0.0,
        thinking=base.thinking if given.thinking is None else given.thinking,
    )

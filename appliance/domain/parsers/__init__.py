"""The output parser chain for local models: what a model served without a tool or reasoning
parser writes as text, turned into the fields clients read (docs/parsers.md).

    stages.py       the four stage names, which apply to a request, the counters' port
    reasoning.py    `<think>...</think>` at the start of an answer -> reasoning text
    tool_text.py    tool calls written as text (Hermes, Mistral, Llama 3, bare JSON) -> calls
    json_value.py   where a JSON value written as text ends (for the streamed formats)
    schemas.py      JSON schema checks (tool arguments, `response_format`), compiled once
    chain.py        the stages composed over chat chunks (streams) and bodies (JSON)
    vision.py       image URLs fetched and inlined as data URLs (through a port)
    output_format.py  `response_format` json_schema strict: the check and the retry's prompt
    policy.py       which stages apply to a request (per model, per backend kind), the chain for it

Everything here is pure: text and decoded JSON in, values out; the one I/O (fetching an
image) goes through the `ImageFetcher` port.
"""

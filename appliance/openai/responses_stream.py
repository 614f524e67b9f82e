"""OpenAI chat completion chunks in, Responses API stream events out.

Every event is `event: <type>` and one JSON `data` line carrying `type` and a
`sequence_number` counted from 0. The order, as OpenAI sends it:

    response.created, response.in_progress
    per output item: response.output_item.added
        reasoning:  content_part.added, reasoning_text.delta ..., reasoning_text.done, content_part.done
        message:    content_part.added, output_text.delta ..., output_text.done, content_part.done
        function:   function_call_arguments.delta ..., function_call_arguments.done
    response.output_item.done
    response.completed (or response.incomplete when the answer was cut; response.failed on a failure)

A chat delta's `reasoning_content` (or `reasoning`) opens a reasoning item, its `content` a
message, each new tool-call index a function call. A reasoning or message item closes when
another kind of output starts; function calls close at the end, since a chat stream may
interleave the fragments of parallel calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from appliance.openai import responses_output as out
from appliance.openai.responses import ResponsesCall, new_id


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponsesStream:
    """`start()` once, `feed(chunk)` for each decoded chunk, then `close()` for the items still
    open, `response()` for the final object and `completed()` for its event; or, when the
    stream broke, `failure(code, message)`."""

    __slots__ = ("_base", "_calls", "_finish", "_namespaced", "_open", "_output", "_parts", "_seq", "_usage")

    def __init__(self, call: ResponsesCall, response_id: str, created_at: int, previous_response_id: str | None) -> None:
        self._base = out.skeleton(call, response_id, created_at, previous_response_id=previous_response_id)
        self._namespaced = call.namespaced
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._open: int | None = None             # output index of the open reasoning or message item
        self._parts: dict[int, list[str]] = {}   # output index -> text (or arguments) so far
        self._calls: dict[int, int] = {}          # chat tool-call index -> output index, while open
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        frame = event(kind, {"type": kind, "sequence_number": self._seq, **data})
        self._seq += 1
        return frame

    def start(self) -> list[bytes]:
        return [self._event("response.created", response=self._base),
                self._event("response.in_progress", response=self._base)]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # one answer per response
            delta = choice.get("delta") or {}
            thought = out.reasoning_text(delta)
            if thought:
                frames += self._text("reasoning", thought)
            text = delta.get("content")
            if isinstance(text, str) and text:
                frames += self._text("message", text)
            for call in delta.get("tool_calls") or ():
                frames += self._call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return frames

    def _opened(self, kind: str) -> list[bytes]:
        """Open a `kind` item unless one is open already."""
        if self._open is not None and self._output[self._open]["type"] == kind:
            return []
        frames = self._close_open()
        frames += self._add(out.reasoning_item(new_id("rs"), "", "in_progress") if kind == "reasoning"
                            else out.message_item(new_id("msg"), None, "in_progress"))
        self._open = len(self._output) - 1
        frames.append(self._event("response.content_part.added", **self._where(self._open),
                                  part=self._part(kind, "")))
        return frames

    def _text(self, kind: str, text: str) -> list[bytes]:
        frames = self._opened(kind)
        index = self._open
        assert index is not None  # _opened leaves it open
        self._parts[index].append(text)
        delta = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        frames.append(self._event(delta, **self._where(index), delta=text, **extra))
        return frames

    def _call(self, call: Mapping[str, Any]) -> list[bytes]:
        frames = self._close_open()
        slot = int(call.get("index", 0))
        function = call.get("function") or {}
        if slot not in self._calls:
            call_id = str(call.get("id") or new_id("call"))
            frames += self._add(out.function_item(new_id("fc"), call_id, str(function.get("name") or ""), "",
                                                  self._namespaced, "in_progress"))
            self._calls[slot] = len(self._output) - 1
        index = self._calls[slot]
        arguments = function.get("arguments")
        if arguments:
            self._parts[index].append(str(arguments))
            frames.append(self._event("response.function_call_arguments.delta", item_id=self._output[index]["id"],
                                      output_index=index, delta=str(arguments)))
        return frames

    def _add(self, item: dict[str, Any]) -> list[bytes]:
        self._output.append(item)
        self._parts[len(self._output) - 1] = []
        return [self._event("response.output_item.added", output_index=len(self._output) - 1, item=item)]

    def _where(self, index: int) -> dict[str, Any]:
        return {"item_id": self._output[index]["id"], "output_index": index, "content_index": 0}

    @staticmethod
    def _part(kind: str, text: str) -> dict[str, Any]:
        return {"type": "reasoning_text", "text": text} if kind == "reasoning" else out.text_part(text)

    def _close_open(self) -> list[bytes]:
        index, self._open = self._open, None
        if index is None:
            return []
        item, text = self._output[index], "".join(self._parts[index])
        if item["type"] == "reasoning":
            done = out.reasoning_item(item["id"], text)
            frames = [self._event("response.reasoning_text.done", **self._where(index), text=text)]
        else:
            done = out.message_item(item["id"], text)
            frames = [self._event("response.output_text.done", **self._where(index), text=text, logprobs=[])]
        self._output[index] = done
        frames.append(self._event("response.content_part.done", **self._where(index),
                                  part=self._part(item["type"], text)))
        frames.append(self._event("response.output_item.done", output_index=index, item=done))
        return frames

    def close(self) -> list[bytes]:
        """Close every item still open (an answer with no output gets an empty message)."""
        frames = self._opened("message") if not self._output else []
        frames += self._close_open()
        for index in sorted(self._calls.values()):
            item = self._output[index]
            arguments = "".join(self._parts[index])
            done = {**item, "status": "completed", "arguments": arguments}
            self._output[index] = done
            frames.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                      name=item["name"], arguments=arguments))
            frames.append(self._event("response.output_item.done", output_index=index, item=done))
        self._calls.clear()
        return frames

    def response(self) -> dict[str, Any]:
        """The final response object (after `close`)."""
        return out.finished(self._base, list(self._output), self._finish, self._usage)

    def completed(self, response: dict[str, Any]) -> bytes:
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return self._event(kind, response=response)

    def failure(self, code: str, message: str) -> tuple[dict[str, Any], bytes]:
        """The failed response object (its output so far) and its `response.failed` event."""
        response = out.failed(self._base, [i for i in self._output if i.get("status") == "completed"], code, message)
        return response, self._event("response.failed", response=response)

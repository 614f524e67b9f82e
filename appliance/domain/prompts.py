"""Prompts the gateway writes, as versioned values: `name@version`, chosen per request.

A prompt's text is an instruction; `{sources}` in it marks where the numbered sources go
(after it, separated by a blank line, when absent). Files and their loading live in
`appliance/prompts/`; this module only picks one:

    x-prompt-version header  >  the workspace's pin  >  the configured default

A reference is `name@N` (that version) or `name` (its newest version), or, from the header,
a bare `N` (that version of the default's name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from appliance.domain.errors import InvalidRequest

NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
REF: Final = re.compile(r"(?P<name>[a-z0-9][a-z0-9_-]{0,63})(?:@(?P<version>[0-9]{1,6}))?")
SOURCES_SLOT: Final = "{sources}"


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    text: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, sources: str) -> str:
        """The instruction with the numbered sources in their slot (or after it)."""
        text = self.text.strip()
        if SOURCES_SLOT in text:
            return text.replace(SOURCES_SLOT, sources)
        return f"{text}\n\n{sources}" if sources else text


class UnknownPrompt(LookupError):
    """A reference to no prompt of the book (a configuration error at start)."""


class PromptBook:
    """Every prompt by name and version."""

    def __init__(self, prompts: Iterable[Prompt]) -> None:
        self._by_ref: dict[tuple[str, int], Prompt] = {}
        for p in prompts:
            if (p.name, p.version) in self._by_ref:
                raise ValueError(f"prompt {p.ref} is defined twice")
            self._by_ref[(p.name, p.version)] = p

    def refs(self) -> list[str]:
        return [p.ref for p in sorted(self._by_ref.values(), key=lambda p: (p.name, p.version))]

    def get(self, ref: str) -> Prompt:
        """`name@N` or `name` (newest); `UnknownPrompt` when there is none."""
        match = REF.fullmatch(ref.strip())
        if match is None:
            raise UnknownPrompt(f"{ref!r} is not a prompt reference (name@version)")
        name, version = match["name"], match["version"]
        if version is not None:
            found = self._by_ref.get((name, int(version)))
        else:
            found = max((p for (n, _), p in self._by_ref.items() if n == name), key=lambda p: p.version,
                        default=None)
        if found is None:
            raise UnknownPrompt(f"no prompt {ref!r}; known: {', '.join(self.refs()) or 'none'}")
        return found


class PromptChoice:
    """Which prompt a request gets: its header's, its workspace's pin, or the default.
    Every reference given at construction is checked then (`UnknownPrompt`)."""

    def __init__(self, book: PromptBook, default: str, pins: Mapping[str, str] | None = None) -> None:
        self.book = book
        self.default = book.get(default)
        self._pins = {workspace: book.get(ref) for workspace, ref in (pins or {}).items()}

    def choose(self, workspace: str, requested: str | None = None) -> Prompt:
        if requested:
            ref = requested.strip()
            if ref.isascii() and ref.isdigit():
                ref = f"{self.default.name}@{ref}"
            try:
                return self.book.get(ref)
            except UnknownPrompt as exc:
                raise InvalidRequest(str(exc), param="x-prompt-version") from exc
        return self._pins.get(workspace, self.default)

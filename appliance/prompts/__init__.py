"""The prompts the gateway writes, one file each: `<name>@<version>.txt` in this package (and,
for local experiments, in a directory of the operator's). A file is never edited once
released: a change is a new version, so every chat event names the exact text it was sent
(docs/ui.md, "Prompts")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from appliance.domain.prompts import Prompt, PromptBook

_FILE = re.compile(r"(?P<name>[a-z0-9][a-z0-9_-]{0,63})@(?P<version>[0-9]{1,6})\.txt")


def _read(entries: Iterator[tuple[str, str]]) -> Iterator[Prompt]:
    for filename, text in entries:
        match = _FILE.fullmatch(filename)
        if match is not None:
            yield Prompt(match["name"], int(match["version"]), text)


def packaged() -> list[Prompt]:
    root = resources.files(__name__)
    return list(_read((e.name, e.read_text(encoding="utf-8")) for e in root.iterdir() if e.is_file()))


def load_prompts(extra_dir: Path | None = None) -> PromptBook:
    """The packaged prompts, plus `extra_dir`'s (a version defined twice is an error)."""
    prompts = packaged()
    if extra_dir is not None:
        prompts += _read((p.name, p.read_text(encoding="utf-8")) for p in sorted(extra_dir.glob("*.txt")))
    return PromptBook(prompts)

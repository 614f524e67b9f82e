"""Reading files into text for ingest: Markdown, plain text, reStructuredText and HTML.

HTML becomes Markdown-ish text: headings keep a `#` prefix and block elements end
paragraphs, so the chunker can prefer the same boundaries a reader sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Final

TEXT_SUFFIXES: Final = frozenset({".md", ".markdown", ".txt", ".text", ".rst"})
HTML_SUFFIXES: Final = frozenset({".html", ".htm", ".xhtml"})
SUPPORTED: Final = TEXT_SUFFIXES | HTML_SUFFIXES
_BLOCKS: Final = frozenset({"p", "div", "section", "article", "li", "tr", "br", "pre", "blockquote", "table",
                            "ul", "ol", "header", "footer", "main", "aside", "dd", "dt"})
_SKIP: Final = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS or (len(tag) == 2 and tag[0] == "h" and tag[1].isdigit()):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


def read_text(path: Path) -> str:
    """A file's text; NUL bytes (which PostgreSQL text cannot hold) are dropped."""
    raw = path.read_text(encoding="utf-8", errors="replace").replace("\x00", "")
    return html_to_text(raw) if path.suffix.lower() in HTML_SUFFIXES else raw


def collect(paths: Iterable[Path]) -> Iterator[tuple[str, Path]]:
    """(document id, file) for every supported file; a directory's files are named by their
    path relative to it, a file by its name, so re-ingesting the same tree finds the same ids."""
    for root in paths:
        if root.is_dir():
            for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED):
                yield file.relative_to(root).as_posix(), file
        elif root.is_file():
            yield root.name, root
        else:
            raise FileNotFoundError(f"no such file or directory: {root}")

"""Reading files for ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.rag.documents import collect, html_to_text


def test_html_keeps_headings_and_paragraphs_and_drops_scripts() -> None:
    html = ("<html><head><title>T</title><style>p{}</style></head><body><h2>Boiler</h2>"
            "<p>Bleed the <b>radiators</b> in autumn.</p><script>track()</script><ul><li>one</li><li>two</li></ul></body>")
    assert html_to_text(html) == "## Boiler\n\nBleed the radiators in autumn.\n\none\n\ntwo"


def test_collect_names_documents_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/a.md", "d/e/b.HTML", "d/c.png", "f.txt"):
        (tmp_path / name).write_text("x")
    found = [(doc_id, p.name) for doc_id, p in collect([tmp_path / "d", tmp_path / "f.txt"])]
    assert found == [("a.md", "a.md"), ("e/b.HTML", "b.HTML"), ("f.txt", "f.txt")]
    with pytest.raises(FileNotFoundError):
        list(collect([tmp_path / "missing"]))

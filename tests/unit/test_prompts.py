"""Prompts as versioned files: which one a request gets, and that the packaged RAG prompt
writes the context the gateway always wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.domain.errors import InvalidRequest
from appliance.domain.knowledge import Hit, compose
from appliance.domain.prompts import Prompt, PromptBook, PromptChoice, UnknownPrompt
from appliance.prompts import load_prompts

BOOK = PromptBook([Prompt("rag-answer", 1, "Use the sources."), Prompt("rag-answer", 2, "Sources:\n{sources}\nCite [n]."),
                   Prompt("terse", 1, "Be brief.")])


def test_header_beats_the_workspace_pin_which_beats_the_default() -> None:
    choice = PromptChoice(BOOK, "rag-answer@1", {"home": "terse"})
    assert choice.choose("work").ref == "rag-answer@1"
    assert choice.choose("home").ref == "terse@1"
    assert choice.choose("home", "rag-answer").ref == "rag-answer@2"  # a name alone: its newest
    assert choice.choose("home", "2").ref == "rag-answer@2"  # a bare version: of the default's name
    with pytest.raises(InvalidRequest) as refused:
        choice.choose("home", "rag-answer@9")
    assert refused.value.param == "x-prompt-version" and "rag-answer@1, rag-answer@2, terse@1" in refused.value.message


def test_a_pin_or_default_naming_no_prompt_is_refused_at_construction() -> None:
    with pytest.raises(UnknownPrompt):
        PromptChoice(BOOK, "rag-answer", {"home": "missing@1"})
    with pytest.raises(UnknownPrompt):
        PromptChoice(BOOK, "nope")
    with pytest.raises(ValueError, match="twice"):
        PromptBook([Prompt("a", 1, "x"), Prompt("a", 1, "y")])


def test_sources_go_in_their_slot_or_after_the_text() -> None:
    hits = [Hit("a.md", 0, "alpha", {}, {"rrf": 0.1})]
    assert compose(hits, BOOK.get("rag-answer@2")).system_message == "Sources:\n[1] (a.md) alpha\nCite [n]."
    ctx = compose(hits, BOOK.get("rag-answer@1"))
    assert ctx.system_message == "Use the sources.\n\n[1] (a.md) alpha" and ctx.prompt == BOOK.get("rag-answer@1")
    assert [(p.number, p.document_id, p.content, p.scores) for p in ctx.passages] == [(1, "a.md", "alpha", {"rrf": 0.1})]


def test_the_packaged_rag_prompt_is_the_text_the_gateway_always_wrote(tmp_path: Path) -> None:
    book = load_prompts()
    assert "rag-answer@1" in book.refs()
    message = compose([Hit("d", 0, "text", {})], book.get("rag-answer")).system_message
    assert message == ("Answer using the numbered sources below when they are relevant, and cite them as [n]. "
                       "If they do not contain the answer, say so.\n\n[1] (d) text")
    (tmp_path / "rag-answer@2.txt").write_text("Mine: {sources}")
    (tmp_path / "notes.md").write_text("not a prompt")
    assert load_prompts(tmp_path).get("rag-answer").ref == "rag-answer@2"


def test_settings_pin_a_workspace_and_a_pin_to_no_prompt_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.config import ConfigError, load_settings
    from appliance.rag.wiring import prompt_choice

    monkeypatch.setenv("APPLIANCE_KNOWLEDGE__WORKSPACE_PROMPTS", '{"home": "rag-answer@1"}')
    assert prompt_choice(load_settings(None, None)).choose("home").ref == "rag-answer@1"
    monkeypatch.setenv("APPLIANCE_KNOWLEDGE__WORKSPACE_PROMPTS", '{"home": "rag-answer@5"}')
    with pytest.raises(ConfigError, match="no prompt 'rag-answer@5'; known: rag-answer@1"):
        load_settings(None, None)

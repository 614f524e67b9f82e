"""A router that learns from labelled prompts, or from prompts its own cards label: the
classifier replaces the cards' scores, keeps the fit filters and the fail-open rules, and a
catalog's training or unlabelled file is checked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from appliance.config import ConfigError, load_settings
from appliance.domain.prompt_classifier import LinearModel
from appliance.domain.semantic_router import Card, SemanticRouter
from appliance.inference.prompt_trainer import LogisticTrainer, fit_logistic
from tests.unit.test_semantic_router import FakeEncoder

# Cards that say the opposite of what the prompts mean: only learning can route right.
WRONG_CARDS = [Card("coder", "math", ("prove this math",)), Card("reasoner", "code", ("fix this code",)),
               Card("general", "chat", ("chat with me",), context_length=50)]
TRAINING = [("fix my code", "coder"), ("code review", "coder"), ("prove it math", "reasoner"),
            ("math please", "reasoner"), ("chat a bit", "general"), ("just chat", "general")]


async def learnt(**kw: object) -> SemanticRouter:
    r = SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=1000.0, training=TRAINING,
                       trainer=LogisticTrainer(), **kw)  # type: ignore[arg-type]
    await r.prepare()
    return r


async def test_the_learnt_classifier_routes_where_the_cards_would_not() -> None:
    cards_only = SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=1000.0)
    await cards_only.prepare()
    assert (await cards_only.choose("please fix the code")).model == "reasoner"   # the cards mislead
    r = await learnt()
    d = await r.choose("please fix the code")
    assert (d.model, d.defaulted) == ("coder", False)
    assert d.reason.startswith("p 0.") and d.reason.endswith(("over reasoner", "over general"))
    assert (await r.choose("some math")).model == "reasoner"
    assert (await r.choose("let us chat")).model == "general"


async def test_the_classifier_keeps_the_fit_filters_and_the_weights() -> None:
    r = await learnt()
    d = await r.choose("chat chat", prompt_tokens=100)     # general's context is 50: it does not fit
    assert d.model in ("coder", "reasoner") and not d.defaulted
    weighted = await learnt(weights={"quality": 1.0, "latency": 0.0, "cost": 0.0})
    assert (await weighted.choose("fix the code")).model == "coder"


async def test_many_training_prompts_are_embedded_in_slices() -> None:
    encoder = FakeEncoder()
    many = TRAINING * 100   # 600
    r = SemanticRouter("auto", WRONG_CARDS, "general", encoder, budget_ms=1000.0, training=many,
                       trainer=LogisticTrainer())
    await r.prepare()
    sizes = [len(call) for call in encoder.cards]
    assert sizes == [6, 256, 256, 88]   # the cards' texts, then the training prompts
    assert (await r.choose("fix the code")).model == "coder"


async def test_training_is_checked_when_the_router_is_built() -> None:
    with pytest.raises(ValueError, match="need a trainer"):
        SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=10.0, training=TRAINING)
    with pytest.raises(ValueError, match="each candidate"):
        SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=10.0,
                       training=TRAINING[:4], trainer=LogisticTrainer())


class RecordingTrainer(LogisticTrainer):
    def __init__(self) -> None:
        self.seen: list[tuple[list[list[float]], list[str]]] = []

    async def fit(self, vectors: Sequence[Sequence[float]], labels: Sequence[str]) -> LinearModel:
        self.seen.append(([list(v) for v in vectors], list(labels)))
        return await super().fit(vectors, labels)


CARDS = [Card("coder", "code", ("fix this code",)), Card("reasoner", "math", ("prove this math",)),
         Card("general", "chat", ("chat with me",))]


async def test_unlabelled_prompts_are_labelled_by_the_cards_and_learnt_from() -> None:
    trainer = RecordingTrainer()
    pool = ["the code crashes", "math homework", "a chat", "hello there",   # no topic: a zero vector
            "code and chat"]                                               # a tie: the default's margin keeps it
    r = SemanticRouter("auto", CARDS, "general", FakeEncoder(), budget_ms=1000.0, margin=0.1,
                       unlabelled=pool, trainer=trainer)
    await r.prepare()
    [(vectors, labels)] = trainer.seen
    # the cards' own six texts under their cards, then the pool as the cards route it, "hello there" left out
    assert labels == ["coder", "coder", "reasoner", "reasoner", "general", "general",
                      "coder", "reasoner", "general", "general"]
    assert len(vectors) == 10 and all(any(v) for v in vectors)
    d = await r.choose("please fix the code")
    assert (d.model, d.defaulted) == ("coder", False) and d.reason.startswith("p 0.")
    assert (await r.choose("some math")).model == "reasoner"
    assert (await r.choose("chat chat")).model == "general"


async def test_a_router_learns_from_labels_or_from_unlabelled_prompts_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=10.0, training=TRAINING,
                       unlabelled=["fix it"], trainer=LogisticTrainer())
    with pytest.raises(ValueError, match="need a trainer"):
        SemanticRouter("auto", WRONG_CARDS, "general", FakeEncoder(), budget_ms=10.0, unlabelled=["fix it"])


def test_logistic_regression_separates_and_the_model_applies_in_plain_python() -> None:
    rng = np.random.default_rng(1)
    centres = np.eye(4)[:3]
    x = np.concatenate([c + 0.2 * rng.standard_normal((30, 4)) for c in centres])
    labels = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    model = fit_logistic(x, labels)
    assert model.classes == ("a", "b", "c") and model.dimensions == 4
    picks = [max(p := model.probabilities(list(v), ["a", "b", "c"]), key=p.__getitem__) for v in x]
    assert np.mean([p == y for p, y in zip(picks, labels, strict=True)]) > 0.95
    only = model.probabilities(list(centres[0]), ["b", "c"])
    assert set(only) == {"b", "c"} and sum(only.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one row of weights"):
        LinearModel(("a",), (), (0.0,))


CATALOG = """
[[backends]]
name = "b"
kind = "vllm"
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "coder"
backend = "b"
description = "code"

[[models]]
id = "general"
backend = "b"
description = "chat"

[[routers]]
id = "auto"
candidates = ["coder", "general"]
default = "general"
training = "examples/auto.jsonl"
"""


def test_a_training_file_is_read_beside_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "auto.jsonl").write_text(
        json.dumps({"prompt": "fix my code", "model": "coder"}) + "\n\n"
        + json.dumps({"prompt": "hello there", "model": "general"}) + "\n")
    (tmp_path / "catalog.toml").write_text(CATALOG)
    router = load_settings(tmp_path / "catalog.toml").catalog.routers[0]
    assert [(e.prompt, e.model) for e in router.training_examples] == [("fix my code", "coder"),
                                                                       ("hello there", "general")]


@pytest.mark.parametrize(("lines", "expected"), [
    (None, "routers[0].training: "),
    (['{"prompt": "fix", "model": "coder"}', "not json"], "auto.jsonl:2: not JSON"),
    (['["fix", "coder"]'], "auto.jsonl:1: not a JSON object"),
    (['{"prompt": "fix", "model": "coder"}', '{"prompt": "hi", "model": "poet"}'],
     "routers[0].training_examples[1].model: 'poet' is not one of the candidates"),
    (['{"prompt": "fix", "model": "coder"}'], "routers[0].training_examples: no example for general"),
    (['{"prompt": "", "model": "coder"}'], "routers[0].training_examples[0].prompt"),
])
def test_a_bad_training_file_fails_with_one_line(tmp_path: Path, lines: list[str] | None, expected: str) -> None:
    (tmp_path / "examples").mkdir()
    if lines is not None:
        (tmp_path / "examples" / "auto.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "catalog.toml").write_text(CATALOG)
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "catalog.toml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_shipped_roles_map_onto_a_catalogs_candidates(tmp_path: Path) -> None:
    three = CATALOG.replace('candidates = ["coder", "general"]', 'candidates = ["coder", "reasoner", "general"]')
    three = three.replace("[[routers]]", '[[models]]\nid = "reasoner"\nbackend = "b"\ndescription = "maths"\n\n[[routers]]')
    roles = three.replace('training = "examples/auto.jsonl"',
                          'training = "builtin:roles"\n'
                          'training_models = { coding = "coder", reasoning = "reasoner", general = "general" }')
    (tmp_path / "catalog.toml").write_text(roles)
    examples = load_settings(tmp_path / "catalog.toml").catalog.routers[0].training_examples
    assert len(examples) >= 700 and {e.model for e in examples} == {"coder", "reasoner", "general"}
    (tmp_path / "catalog.toml").write_text(roles.replace("coding = \"coder\", ", ""))   # "coding" left unmapped
    with pytest.raises(ConfigError, match="'coding' is not one of the candidates"):
        load_settings(tmp_path / "catalog.toml")
    (tmp_path / "catalog.toml").write_text(roles.replace("builtin:roles", "builtin:poems"))
    with pytest.raises(ConfigError, match=r"routers\[0\]\.training: .*poems\.jsonl"):
        load_settings(tmp_path / "catalog.toml")


def test_unlabelled_prompts_are_read_from_a_file_or_the_shipped_roles(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "pool.jsonl").write_text(
        json.dumps({"prompt": "fix my code"}) + "\n\n" + json.dumps({"prompt": "hi", "model": "ignored"}) + "\n")
    unlabelled = CATALOG.replace('training = "examples/auto.jsonl"', 'unlabelled = "examples/pool.jsonl"')
    (tmp_path / "catalog.toml").write_text(unlabelled)
    router = load_settings(tmp_path / "catalog.toml").catalog.routers[0]
    assert router.unlabelled_prompts == ("fix my code", "hi") and router.training_examples == ()
    (tmp_path / "catalog.toml").write_text(unlabelled.replace("examples/pool.jsonl", "builtin:roles"))
    prompts = load_settings(tmp_path / "catalog.toml").catalog.routers[0].unlabelled_prompts
    assert len(prompts) >= 700 and len(set(prompts)) == len(prompts)
    (tmp_path / "examples" / "auto.jsonl").write_text(
        json.dumps({"prompt": "fix", "model": "coder"}) + "\n" + json.dumps({"prompt": "hi", "model": "general"}) + "\n")
    (tmp_path / "catalog.toml").write_text(CATALOG.replace('training = "examples/auto.jsonl"',
                                                           'training = "examples/auto.jsonl"\nunlabelled = "builtin:roles"'))
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "catalog.toml")
    assert "routers[0].unlabelled: a router learns from training or from unlabelled prompts, not both" in str(err.value)
    (tmp_path / "catalog.toml").write_text(unlabelled.replace("examples/pool.jsonl", "examples/none.jsonl"))
    with pytest.raises(ConfigError, match=r"routers\[0\]\.unlabelled: .*none\.jsonl"):
        load_settings(tmp_path / "catalog.toml")


async def test_a_fitted_classifier_is_kept_for_the_next_start_with_the_same_inputs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from appliance.inference.learnt_models import LearntModelFiles

    pool = ["the code crashes", "math homework", "a chat"] * 10

    async def start(cards: list[Card] = CARDS) -> tuple[SemanticRouter, FakeEncoder, RecordingTrainer]:
        encoder, trainer = FakeEncoder(), RecordingTrainer()
        r = SemanticRouter("auto", cards, "general", encoder, budget_ms=1000.0, unlabelled=pool, trainer=trainer,
                           learnt_models=LearntModelFiles(tmp_path / "routers"))
        await r.prepare()
        return r, encoder, trainer

    first, encoder, trainer = await start()
    assert len(trainer.seen) == 1 and [len(c) for c in encoder.cards] == [6, 30]
    again, encoder, trainer = await start()
    assert trainer.seen == [] and [len(c) for c in encoder.cards] == [6]   # only the cards embedded
    for prompt in ("please fix the code", "some math", "chat chat"):
        assert (await again.choose(prompt)).model == (await first.choose(prompt)).model
    other = [Card("coder", "code", ("fix this code", "code code")), *CARDS[1:]]
    _, _, trainer = await start(other)   # another card: another key, fitted again
    assert len(trainer.seen) == 1
    for kept in (tmp_path / "routers").glob("*.json"):
        kept.write_text("{not json")
    _, _, trainer = await start()
    assert len(trainer.seen) == 1 and "could not be read" in caplog.text

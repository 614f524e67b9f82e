"""USE in onnxruntime (`use_onnx.py`) over the ONNX bytes `onnx_writer.py` writes, and the
windowed tokenisation of long prompts (`token_windows.py`): same answers as before, less work."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from appliance.inference import onnx_writer as ox
from appliance.inference import use_onnx
from appliance.inference.e5_tokens import E5TokenTable, default_model_path
from appliance.inference.token_windows import head_tail_ids
from appliance.inference.use_model import UseModel, resources_dir

TEXTS = ["Fix the off-by-one error in this loop",
         "Wie kann ich in Python eine Liste von Dictionaries nach einem Schlüssel sortieren?",
         "एक JavaScript फ़ंक्शन लिखिए जो एक array को सॉर्ट करे",
         "Compare renting and buying a flat over 20 years, step by step. " * 6]


@pytest.fixture(scope="module")
def use_numpy() -> UseModel:
    return UseModel(resources_dir(), runtime="numpy")


def test_the_writer_makes_a_model_onnxruntime_runs() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    q = np.array([[1, -2], [3, 4], [-5, 6]], dtype=np.int8)
    nodes = [ox.node("MatMul", ["x", "w"], ["xw"]),
             ox.node("LayerNormalization", ["xw", "g", "b"], ["ln"], axis=-1, epsilon=1e-5),
             ox.node("ReduceSum", ["ln", "axes"], ["sum"], keepdims=1),
             ox.node("MatMulInteger", ["xq", "q", "", "zp"], ["i32"])]
    data = ox.model(nodes, {"w": w, "g": np.ones(3, np.float32), "b": np.zeros(3, np.float32),
                            "axes": np.array([0], np.int64), "q": q, "zp": np.int8(-1)},
                    [ox.value_info("x", ox.FLOAT, ["T", 4]), ox.value_info("xq", ox.UINT8, ["T", 3])],
                    [ox.value_info("sum", ox.FLOAT, [1, 3]), ox.value_info("i32", ox.INT32, ["T", 2])])
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    xq = np.array([[0, 1, 2], [200, 7, 255]], dtype=np.uint8)
    total, product = session.run(["sum", "i32"], {"x": x, "xq": xq})
    h = x @ w
    ln = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    assert np.allclose(total, ln.sum(0, keepdims=True), atol=1e-4)
    assert (product == xq.astype(np.int32) @ (q.astype(np.int32) + 1)).all()
    with pytest.raises(ValueError, match="no ONNX type"):
        ox.tensor("f16", np.zeros(2, np.float16))


def test_exact_int8_recovers_a_quantized_grid_and_refuses_other_weights() -> None:
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 200, size=(8, 5))
    w = ((levels - 57) * np.float32(0.013)).astype(np.float32)
    exact = use_onnx.exact_int8(w)
    assert exact is not None
    q, zero, step = exact
    assert np.allclose((q.astype(np.float64) - zero) * step, w, atol=1e-6)
    assert use_onnx.exact_int8(rng.normal(size=(30, 30)).astype(np.float32)) is None


def test_onnx_vectors_match_the_numpy_backend(use_numpy: UseModel) -> None:
    onnx = use_onnx.UseOnnx(use_numpy._backend)
    assert onnx.float_matmuls == 4      # the input projection and the first n-gram layer's three
    for text in TEXTS:
        ids, _ = use_numpy.ids(text, 64, 16)
        ref = use_numpy.embed_ids([ids])[0]
        ours = onnx.embed_one([1, *ids, 2])
        assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
        assert float(ours @ ref) > 0.999, text


def test_a_failing_onnxruntime_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def broken(backend: object) -> None:
        raise RuntimeError("no kernel for MatMulInteger")

    monkeypatch.setattr(use_onnx, "UseOnnx", broken)
    with caplog.at_level(logging.WARNING, logger="appliance.inference.use_model"):
        model = UseModel(resources_dir())
    assert model.runtime == "numpy"
    assert "MatMulInteger" in caplog.text
    assert model.embed_ids([model.ids(TEXTS[0], 64, 16)[0]]).shape == (1, 512)


def test_windows_give_the_whole_texts_tokens(use_numpy: UseModel) -> None:
    e5 = E5TokenTable(default_model_path())
    long_texts = [
        "Please read this build log and tell me what failed, and why. " * 60 + "Why does it fail?",
        "Mein Docker-Image ist zu groß; wie baue ich es kleiner mit mehreren Stufen?  " * 40,
        "मेरे React ऐप में state अपडेट नहीं हो रहा, क्या करूँ? " * 50,
        "为什么我的组件里数据修改了但页面没有更新" * 80,              # no spaces: the whole-text path
        "x" * 900 + " tail words at the end of a very long unbroken token",
    ]
    for text in [*TEXTS, *long_texts]:
        for tokenizer, head, tail in ((use_numpy.tokenizer, 64, 16), (e5.tokenizer, 256, 0)):
            whole = tokenizer.encode(text, add_special_tokens=False).ids
            cut = whole[:head] + (whole[len(whole) - tail:] if tail else []) if len(whole) > head + tail else whole
            assert head_tail_ids(tokenizer, text, head, tail) == (cut, len(whole) > head + tail), text[:40]

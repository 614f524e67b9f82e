"""The declared output shape of an ONNX file, and `embedding_dim` reading it without a session."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from appliance.config import ConfigError, KnowledgeSettings, Settings
from appliance.inference import model_files, session
from appliance.inference.model_files import (
    default_model_path,
    default_tokenizer_path,
    embedding_dim,
)
from appliance.inference.onnx_graph import Dim, OnnxFormatError, first_output_shape, output_shape
from appliance.inference.session import ModelLoadError


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf writes it: two's complement, ten bytes when negative
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _len(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _output(name: str, dims: list[Dim] | None) -> bytes:
    tensor = _int(1, 1)  # elem_type FLOAT
    if dims is not None:
        tensor += _len(2, b"".join(_len(1, b"" if d is None else _int(1, d) if isinstance(d, int)
                                        else _len(2, d.encode())) for d in dims))
    return _len(1, name.encode()) + _len(2, _len(1, tensor))


def _model(*outputs: bytes) -> bytes:
    """A ModelProto shaped like an exporter's: header fields, nodes and weights before the
    outputs, fixed-width fields to skip, opsets after the graph."""
    graph = (_len(1, _len(4, b"MatMul")) + _len(2, b"g") + _len(5, b"\x07" * 5000)
             + _len(11, _output("input_ids", ["batch", "sequence"])) + b"".join(_len(12, o) for o in outputs))
    return (_int(1, 8) + _len(2, b"exporter") + _varint(99 << 3 | 1) + b"\x00" * 8 + _varint(98 << 3 | 5)
            + b"\x00" * 4 + _len(7, graph) + _len(8, _int(2, 17)))


def test_the_shipped_model_declares_what_onnxruntime_reports() -> None:
    path = default_model_path()
    declared = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()[0].shape
    assert first_output_shape(path) == tuple(declared) == ("batch", "sequence", 384)


@pytest.mark.parametrize("dims", [["batch", "sequence", 384], [2, None, 768], [-1, 5], []])
def test_the_first_output_shape_is_read(dims: list[Dim]) -> None:
    assert output_shape(_model(_output("last_hidden_state", dims), _output("pooled", [1, 2]))) == tuple(dims)


def test_an_output_without_a_shape_declares_none() -> None:
    assert output_shape(_model(_output("x", None))) is None


@pytest.mark.parametrize("data", [b"", b"\x08", _model(_output("x", [3]))[:-40], _model(), b"\x0b\x00"])
def test_what_is_not_a_walkable_model_is_refused(data: bytes) -> None:
    with pytest.raises(OnnxFormatError):
        output_shape(data)


def test_embedding_dim_reads_the_graph_and_opens_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_session(*args: object) -> None:
        raise AssertionError("embedding_dim opened an onnxruntime session")

    monkeypatch.setattr(session, "open_session", no_session)
    assert embedding_dim(Settings()) == 384


def test_a_width_the_graph_leaves_symbolic_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "first_output_shape", lambda path: ("batch", "sequence", "hidden"))
    assert embedding_dim(Settings(knowledge=KnowledgeSettings(embed_threads=1))) == 384


def test_a_file_that_is_not_onnx_is_onnxruntimes_to_diagnose(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    settings = Settings(knowledge=KnowledgeSettings(embed_model_path=model,
                                                    embed_tokenizer_path=default_tokenizer_path()))
    with pytest.raises(ModelLoadError):
        embedding_dim(settings)


def test_missing_model_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EMBED_MODEL_PATH"):
        embedding_dim(Settings(knowledge=KnowledgeSettings(embed_model_path=tmp_path / "none.onnx")))

"""The output shape an ONNX file declares, read without onnxruntime or the `onnx` package.

`appliance migrate` needs the embedder's dimension to create its vector columns. The file
says it: an ONNX model is a protobuf `ModelProto`, and its graph declares each output's
shape. Opening an onnxruntime session to read that number costs the whole model load;
walking the protobuf wire format instead touches a few bytes per field and jumps over the
weights by their length. The file is memory-mapped, so only the pages walked are read.

Field numbers, from onnx/onnx.proto3 (unchanged since IR version 3): ModelProto.graph 7,
GraphProto.output 12, ValueInfoProto.type 2, TypeProto.tensor_type 1,
TypeProto.Tensor.shape 2, TensorShapeProto.dim 1, Dimension.dim_value 1 (int64) and
Dimension.dim_param 2 (string).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Final

Dim = int | str | None
_Buffer = bytes | mmap.mmap

_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5
_MODEL_GRAPH: Final = 7
_GRAPH_OUTPUT: Final = 12
_VALUE_INFO_TYPE: Final = 2
_TYPE_TENSOR: Final = 1
_TENSOR_SHAPE: Final = 2
_SHAPE_DIM: Final = 1
_DIM_VALUE: Final = 1
_DIM_PARAM: Final = 2


class OnnxFormatError(ValueError):
    """The bytes are not a protobuf message this reader can walk (truncated, or not ONNX)."""


def _varint(buf: _Buffer, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        if pos >= end:
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise OnnxFormatError("varint longer than 10 bytes")


def _fields(buf: _Buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) per field of the message in buf[start:end]: a varint's
    value is `a`; a length-delimited payload is buf[a:b]; fixed-width fields are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, 0
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise OnnxFormatError(f"field {number}: {size} bytes past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
            continue
        if wire not in (_I64, _I32):
            raise OnnxFormatError(f"field {number}: wire type {wire} (ONNX uses no groups)")
        pos += 8 if wire == _I64 else 4
    if pos > end:
        raise OnnxFormatError("last field runs past the end of its message")


def _first(buf: _Buffer, span: tuple[int, int], number: int) -> tuple[int, int] | None:
    """The payload span of the first length-delimited field `number`, if any."""
    for n, wire, a, b in _fields(buf, *span):
        if n == number and wire == _LEN:
            return a, b
    return None


def _dim(buf: _Buffer, span: tuple[int, int]) -> Dim:
    for n, wire, a, b in _fields(buf, *span):
        if n == _DIM_VALUE and wire == _VARINT:
            return a - (1 << 64) if a >= 1 << 63 else a  # int64, two's complement
        if n == _DIM_PARAM and wire == _LEN:
            try:
                return buf[a:b].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise OnnxFormatError("dim_param is not UTF-8") from exc
    return None


def output_shape(buf: _Buffer) -> tuple[Dim, ...] | None:
    """The shape the graph in `buf` (a serialised ModelProto) declares for its first output,
    as onnxruntime's `get_outputs()[0].shape` reports it: an int per fixed dimension, the name
    of a symbolic one, None for one left unnamed; None when no tensor shape is declared."""
    graph = _first(buf, (0, len(buf)), _MODEL_GRAPH)
    if graph is None:
        raise OnnxFormatError("no graph")
    output = _first(buf, graph, _GRAPH_OUTPUT)
    if output is None:
        raise OnnxFormatError("the graph declares no output")
    value_type = _first(buf, output, _VALUE_INFO_TYPE)
    tensor = None if value_type is None else _first(buf, value_type, _TYPE_TENSOR)
    shape = None if tensor is None else _first(buf, tensor, _TENSOR_SHAPE)
    if shape is None:
        return None
    return tuple(_dim(buf, (a, b)) for n, wire, a, b in _fields(buf, *shape)
                 if n == _SHAPE_DIM and wire == _LEN)


def first_output_shape(path: Path) -> tuple[Dim, ...] | None:
    """`output_shape` of the ONNX file at `path`, memory-mapped rather than read."""
    with path.open("rb") as f:
        if path.stat().st_size == 0:
            raise OnnxFormatError(f"{path}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return output_shape(mapped)

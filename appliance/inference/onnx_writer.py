"""An ONNX model written as protobuf bytes, without the `onnx` package: the few messages a
graph of standard operators needs, for `use_onnx.py` to hand onnxruntime a network it builds
from weights a package ships as numpy arrays.

Field numbers, from onnx/onnx.proto3 (stable since IR version 3; `onnx_graph.py` reads the
same format): ModelProto ir_version 1, opset_import 8, producer_name 2, graph 7;
OperatorSetIdProto domain 1, version 2; GraphProto node 1, name 2, initializer 5, input 11,
output 12; NodeProto input 1, output 2, name 3, op_type 4, attribute 5; AttributeProto
name 1, f 2, i 3, ints 8, type 20 (FLOAT 1, INT 2, INTS 7); TensorProto dims 1, data_type 2,
name 8, raw_data 9 (little-endian); ValueInfoProto name 1, type 2; TypeProto tensor_type 1;
TypeProto.Tensor elem_type 1, shape 2; TensorShapeProto dim 1; Dimension dim_value 1,
dim_param 2.

Pure functions over values: bytes in, bytes out. `tests/inference/test_use_onnx.py` checks
that onnxruntime loads and runs what this writes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np

IR_VERSION: Final = 8
FLOAT: Final = 1
UINT8: Final = 2
INT8: Final = 3
INT32: Final = 6
INT64: Final = 7
_DTYPES: Final = {np.dtype("float32"): FLOAT, np.dtype("uint8"): UINT8, np.dtype("int8"): INT8,
                  np.dtype("int32"): INT32, np.dtype("int64"): INT64}
_ATTR_FLOAT: Final = 1
_ATTR_INT: Final = 2
_ATTR_INTS: Final = 7

Attribute = int | float | Sequence[int]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64          # protobuf int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto holding `array` (float32, uint8, int8, int32 or int64) as raw data."""
    dtype = _DTYPES.get(array.dtype)
    if dtype is None:
        raise ValueError(f"tensor {name!r}: no ONNX type for {array.dtype}")
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, dtype) + _str(8, name) + _bytes(9, data.tobytes())


def _attribute(name: str, value: Attribute) -> bytes:
    if isinstance(value, bool):
        raise ValueError(f"attribute {name!r}: use an int, not a bool")
    if isinstance(value, int):
        return _str(1, name) + _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, float):
        return _str(1, name) + _key(2, 5) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    return _str(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "",
         **attributes: Attribute) -> bytes:
    """A NodeProto of the default domain; an empty input name is an omitted optional input."""
    body = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    body += _str(3, name or outputs[0]) + _str(4, op_type)
    body += b"".join(_bytes(5, _attribute(k, v)) for k, v in attributes.items())
    return body


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """A ValueInfoProto: a graph input or output of `elem_type` and `dims` (a str is symbolic)."""
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _str(2, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(nodes: Iterable[bytes], initializers: Mapping[str, np.ndarray],
          inputs: Iterable[bytes], outputs: Iterable[bytes], *, opset: int = 17,
          graph_name: str = "graph", producer: str = "appliance") -> bytes:
    """A serialised ModelProto (default domain at `opset`), ready for `InferenceSession`."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _str(2, graph_name)
    graph += b"".join(_bytes(5, tensor(k, v)) for k, v in initializers.items())
    graph += b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs)
    opset_id = _str(1, "") + _int(2, opset)
    return _int(1, IR_VERSION) + _str(2, producer) + _bytes(7, graph) + _bytes(8, opset_id)

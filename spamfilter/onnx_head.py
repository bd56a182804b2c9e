"""The classification head inside an exported ONNX file, read and replaced without the ``onnx``
package and without torch (the base install has neither).

The exporter names the head's parameters ``classifier.gpt.lm_head.weight`` ((2, C) for the Gemm of
the fp32 files, (C, 2) for the MatMul the quantizer makes of it in the int8 file, where the head
stays fp32) and ``classifier.gpt.lm_head.bias`` ((2,)); they are stored as raw little-endian
float32 bytes in the graph's initializers. A new head has the same shape, so it is written over
those bytes in place: every length in the protobuf stays what it was and the rest of the file is
unchanged byte for byte. Quantized files (``model.int8.onnx``) written before the head was kept in
fp32 hold it as int8 (``..._quantized``, (C, 2), symmetric per-tensor, 7-bit range) with a float
``..._scale``: it is quantized again with the same scheme.

Files exported before the graph had a ``features`` output can be given one in memory
(:func:`with_features_output`): a second instance of the model's graph field, holding only the
new output, which protobuf parsers merge into the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelDirectoryError
from .head import Head

HEAD_WEIGHT = "classifier.gpt.lm_head.weight"
HEAD_BIAS = "classifier.gpt.lm_head.bias"
FEATURES_OUTPUT = "features"  # the pooled vector the head reads: (batch, C) float32
# line-ends pooling: every position the head reads, (batch, K, C); the graph's own head chooses
# among them, another head (a user's, a retrained one) chooses for itself
READ_FEATURES_OUTPUT = "read_features"

_FLOAT, _INT8, _UINT8 = 1, 3, 2  # TensorProto.DataType
_INT8_RANGE = 64  # onnxruntime's reduce_range int8: symmetric [-64, 64]

# Field numbers of onnx.proto3.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_OUTPUT = 1, 5, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP = 1, 2, 4
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_FLOATS, _TENSOR_INT32S, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 5, 8, 9


@dataclass(frozen=True)
class _Field:
    number: int
    wire: int
    start: int  # where the value starts (after the key, and the length for wire type 2)
    end: int
    value: int = 0  # the value of a varint


def _varint(data: bytes | bytearray, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7


def _fields(data: bytes | bytearray, start: int, end: int) -> Iterator[_Field]:
    at = start
    while at < end:
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, after = _varint(data, at)
            yield _Field(number, wire, at, after, value)
            at = after
        elif wire == 1:
            yield _Field(number, wire, at, at + 8)
            at += 8
        elif wire == 2:
            length, at = _varint(data, at)
            yield _Field(number, wire, at, at + length)
            at += length
        elif wire == 5:
            yield _Field(number, wire, at, at + 4)
            at += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if at > end:
            raise ValueError("a field runs past its message")


@dataclass(frozen=True)
class _Tensor:
    name: str
    data_type: int
    dims: tuple[int, ...]
    data: tuple[int, int]  # where its values lie in the file
    packed: bool  # raw_data or packed repeated values: the bytes are the values


def _graph_fields(data: bytes | bytearray) -> Iterator[_Field]:
    """The fields of the model's graph (a parser merges every instance of the graph field)."""
    graphs = [f for f in _fields(data, 0, len(data)) if f.number == _MODEL_GRAPH and f.wire == 2]
    if not graphs:
        raise ValueError("no graph in the model")
    for graph in graphs:
        yield from _fields(data, graph.start, graph.end)


def _tensor(data: bytes | bytearray, field: _Field) -> _Tensor:
    name, data_type, dims, where, packed = "", 0, [], (field.start, field.start), True
    for f in _fields(data, field.start, field.end):
        if f.number == _TENSOR_NAME and f.wire == 2:
            name = bytes(data[f.start : f.end]).decode("utf-8", "replace")
        elif f.number == _TENSOR_TYPE and f.wire == 0:
            data_type = f.value
        elif f.number == _TENSOR_DIMS and f.wire == 0:
            dims.append(f.value)
        elif f.number == _TENSOR_DIMS and f.wire == 2:
            at = f.start
            while at < f.end:
                value, at = _varint(data, at)
                dims.append(value)
        elif (
            f.number in (_TENSOR_RAW, _TENSOR_FLOATS)
            and f.wire == 2
            or f.number == _TENSOR_FLOATS
            and f.wire == 5
        ):
            where = (f.start, f.end)
        elif f.number == _TENSOR_INT32S:
            packed = False  # int32_data: a varint per value, not rewritable in place
    return _Tensor(name, data_type, tuple(dims), where, packed)


def _initializers(data: bytes | bytearray) -> dict[str, _Tensor]:
    found = {}
    for f in _graph_fields(data):
        if f.number == _GRAPH_INITIALIZER and f.wire == 2:
            tensor = _tensor(data, f)
            found[tensor.name] = tensor
    return found


def _floats(data: bytes | bytearray, tensor: _Tensor) -> np.ndarray:
    begin, end = tensor.data
    values = np.frombuffer(bytes(data[begin:end]), dtype="<f4").astype(np.float32)
    return values.reshape(tensor.dims) if tensor.dims else values


def read_head(model: bytes | bytearray) -> Head:
    """The head of an exported model (fp32, or int8 as quantized: dequantized)."""
    try:
        tensors = _initializers(model)
        bias = _floats(model, tensors[HEAD_BIAS])
        if HEAD_WEIGHT in tensors:
            weight = _floats(model, tensors[HEAD_WEIGHT])
            return Head(weight.T if _transposed(tensors[HEAD_WEIGHT]) else weight, bias)
        quantized = tensors[HEAD_WEIGHT + "_quantized"]
        scale = float(_floats(model, tensors[HEAD_WEIGHT + "_scale"]).reshape(-1)[0])
        begin, end = quantized.data
        values = np.frombuffer(
            bytes(model[begin:end]), dtype=np.int8 if quantized.data_type == _INT8 else np.uint8
        )
        return Head(values.reshape(quantized.dims).astype(np.float32).T * scale, bias)
    except KeyError as missing:
        raise ModelDirectoryError(
            f"the model has no classification head named {missing}: export it again with 'spamfilter export'"
        ) from None
    except ValueError as error:
        raise ModelDirectoryError(f"the model file is not a readable ONNX model ({error})") from None


def _transposed(tensor: _Tensor) -> bool:
    """A Gemm holds the head as (2, C); the quantizer's MatMul (an int8 file's fp32 head) as (C, 2)."""
    return len(tensor.dims) == 2 and tensor.dims[0] != 2 and tensor.dims[1] == 2


def replace_head(model: bytes | bytearray, head: Head) -> bytes:
    """The model with its head's values replaced (same shape, same file length)."""
    out = bytearray(model)
    tensors = _initializers(out)
    _write(out, tensors.get(HEAD_BIAS), head.bias, "<f4")
    if HEAD_WEIGHT in tensors:
        weight = head.weight.T if _transposed(tensors[HEAD_WEIGHT]) else head.weight
        _write(out, tensors[HEAD_WEIGHT], weight, "<f4")
        return bytes(out)
    quantized, scale = tensors.get(HEAD_WEIGHT + "_quantized"), tensors.get(HEAD_WEIGHT + "_scale")
    if quantized is None or scale is None or quantized.data_type != _INT8:
        raise ModelDirectoryError(
            "the model's head is neither fp32 nor int8 as this version quantizes it: export it again"
        )
    # Symmetric per-tensor int8 in the 7-bit range, as onnxruntime's reduce_range quantizer does.
    step = float(np.abs(head.weight).max()) / _INT8_RANGE or 1.0
    values = np.clip(np.round(head.weight.T / step), -_INT8_RANGE, _INT8_RANGE).astype(np.int8)
    _write(out, quantized, values, "i1")
    _write(out, scale, np.asarray([step], dtype=np.float32), "<f4")
    return bytes(out)


def _write(out: bytearray, tensor: _Tensor | None, values: np.ndarray, dtype: str) -> None:
    if tensor is None or not tensor.packed:
        raise ModelDirectoryError("the model's head is not stored as this version writes it: export it again")
    begin, end = tensor.data
    payload = np.ascontiguousarray(values).astype(dtype).tobytes()
    if len(payload) != end - begin:
        raise ModelDirectoryError(
            f"a head of {values.shape} does not fit the model's {tensor.name} {tensor.dims}: "
            "the head was trained for another model"
        )
    out[begin:end] = payload


# --------------------------------------------------------------------------- the features output


def output_names(model: bytes | bytearray) -> list[str]:
    names = []
    for f in _graph_fields(model):
        if f.number == _GRAPH_OUTPUT and f.wire == 2:
            for inner in _fields(model, f.start, f.end):
                if inner.number == 1 and inner.wire == 2:
                    names.append(bytes(model[inner.start : inner.end]).decode())
    return names


def _head_input(model: bytes | bytearray) -> str:
    """The float tensor the head reads: the first input of the node that uses the head's weight
    (for a quantized head, what its DynamicQuantizeLinear quantizes)."""
    nodes = []
    for f in _graph_fields(model):
        if f.number == _GRAPH_NODE and f.wire == 2:
            inputs, outputs, op = [], [], ""
            for inner in _fields(model, f.start, f.end):
                text = bytes(model[inner.start : inner.end]).decode("utf-8", "replace")
                if inner.number == _NODE_INPUT:
                    inputs.append(text)
                elif inner.number == _NODE_OUTPUT:
                    outputs.append(text)
                elif inner.number == _NODE_OP:
                    op = text
            nodes.append((op, inputs, outputs))
    producers = {name: (op, inputs) for op, inputs, outputs in nodes for name in outputs}
    for _op, inputs, _ in nodes:
        if len(inputs) > 1 and inputs[1] in (HEAD_WEIGHT, HEAD_WEIGHT + "_quantized"):
            source = inputs[0]
            producer = producers.get(source)
            if producer is not None and producer[0] == "DynamicQuantizeLinear":
                source = producer[1][0]
            return source
    raise ModelDirectoryError("the model's head was not found in its graph: export it again")


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def with_features_output(model: bytes | bytearray, size: int) -> bytes:
    """The model with a ``features`` output ((batch, ``size``) float32, what the head reads) where
    it has none; unchanged where it has one."""
    if FEATURES_OUTPUT in output_names(model):
        return bytes(model)
    source = _head_input(model).encode()
    batch = _message(1, _message(2, b"batch"))  # TensorShapeProto.dim: Dimension.dim_param
    width = _message(1, _key(1, 0) + _encode_varint(size))  # Dimension.dim_value
    tensor_type = _key(1, 0) + _encode_varint(_FLOAT) + _message(2, batch + width)
    output = _message(1, FEATURES_OUTPUT.encode()) + _message(2, _message(1, tensor_type))
    # An Identity node names the output "features" whatever the internal tensor is called.
    node = _message(_NODE_INPUT, source) + _message(_NODE_OUTPUT, FEATURES_OUTPUT.encode())
    node += _message(3, b"features_output") + _message(_NODE_OP, b"Identity")
    graph_extra = _message(_GRAPH_OUTPUT, output)
    if source != FEATURES_OUTPUT.encode():  # (a graph whose tensor is so named only lost the output)
        graph_extra = _message(_GRAPH_NODE, node) + graph_extra
    return bytes(model) + _message(_MODEL_GRAPH, graph_extra)


def feature_rows(session: Any, ids: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """What a head reads of each row of ``ids``, through an onnxruntime session: feature rows
    (N, C) float32 and, for each, the index of its row of ``ids`` (N,). One row per row of ids, or,
    for a graph with ``read_features`` (line-ends pooling), one per position read: a head scores
    a window by its highest row, as the graph's own head does, and a ham correction is taught at
    every position read."""
    names = {output.name for output in session.get_outputs()}
    name = READ_FEATURES_OUTPUT if READ_FEATURES_OUTPUT in names else FEATURES_OUTPUT
    parts = [
        session.run([name], {"input_ids": ids[b : b + batch_size]})[0] for b in range(0, len(ids), batch_size)
    ]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    features = np.concatenate(parts).astype(np.float32)
    reads = features.shape[1] if features.ndim == 3 else 1
    rows = np.repeat(np.arange(len(ids), dtype=np.int64), reads)
    return features.reshape(len(ids) * reads, -1), rows

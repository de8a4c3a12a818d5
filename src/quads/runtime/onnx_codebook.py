"""ONNX graphs that keep the codebooks: each quantized weight is stored as bit-packed indices plus its codebook and
rebuilt inside the graph, so the ONNX file is about as small as the packed file instead of 10x larger.

`torch.onnx` exports the dequantized student (`quads.runtime.onnx_export`); `with_codebooks` then rewrites that graph.
Every float initializer whose values are a quantized tensor, or its transpose (the exporter turns an `nn.Linear`
applied to [B, T, C] into a MatMul by a transposed, constant-folded weight), is replaced by
- `NAME.indices`: uint8, the indices packed 8/b per byte for b = 1, 2, 4 (least significant field first, as in
  `quads.compression.codebook.pack_indices`), one per byte for b = 8, a little-endian bit stream for b = 3;
- `NAME.codebook`: float32 [2^b];
- nodes rebuilding the weight under the initializer's old name, so its consumers do not change: BitShift left then
  right isolates each field (no BitwiseAnd, which needs opset 18), Cast to int64, Gather the codebook, Reshape.
  A tensor with one codebook per group of rows stores them concatenated ([G * 2^b]); each index is offset by its
  group's start (Range, Div, Mul: constants onnxruntime folds) before the Gather, and a transposed use gets a
  Transpose after the Reshape.
A 16-bit weight becomes a float16 initializer and a Cast. onnxruntime folds these constant subgraphs once when it
creates the session, so inference runs at the float model's speed.

Every rebuilt weight is checked with onnxruntime against the values it replaces; one that does not come back exactly
(an op this onnxruntime lacks, say) stays float with a warning naming it, so the file always runs. A quantized tensor
that no initializer holds (the exporter folded it into another constant) also stays float, with a warning.

`compact_names` then renames the exporter's values ("/classifier/encoder/blocks.0/Add_1_output_0", ~160 bytes a
node: 70 KB for a conv-200k graph, as much as its 2-bit weights) to short ones; inputs, outputs and initializers
keep their names.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quads.compression.codebook import FP16_BITS, QuantizedTensor, has_codebook, pack_indices
from quads.onnx_session import cpu_session

_Fingerprint = tuple[tuple[int, ...], str]


@dataclass(frozen=True)
class _Match:
    """A quantized tensor found in the graph, maybe transposed."""

    name: str
    tensor: QuantizedTensor
    transposed: bool


def _fingerprint(array: np.ndarray) -> _Fingerprint:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return tuple(array.shape), hashlib.sha256(array.tobytes()).hexdigest()


def _weights_by_value(quantized: dict[str, QuantizedTensor]) -> dict[_Fingerprint, _Match]:
    table: dict[_Fingerprint, _Match] = {}
    for name, tensor in quantized.items():
        weight = tensor.dequantize().numpy()
        table.setdefault(_fingerprint(weight), _Match(name, tensor, False))
        if weight.ndim == 2:
            table.setdefault(_fingerprint(weight.T), _Match(name, tensor, True))
    return table


# ---------------------------------------------------------------------------------------------- rebuilding one weight


class _Builder:
    """Initializers and nodes of the rebuilding subgraphs; constants shared between weights are made once."""

    def __init__(self) -> None:
        self.initializers: dict[str, TensorProto] = {}
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        if output is None:
            self._count += 1
            output = f"rebuild/{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def weight(self, output: str, match: _Match) -> None:
        """Nodes computing `output`, the float32 weight of `match` (transposed if the graph holds it so)."""
        tensor, prefix = match.tensor, match.name + (".T" if match.transposed else "")
        shape = tensor.shape[::-1] if match.transposed else tensor.shape
        shape_name = self.constant(f"{prefix}.shape", np.array(shape, dtype=np.int64))
        if tensor.bits == FP16_BITS:
            assert tensor.values is not None
            values = tensor.values.float().reshape(tensor.shape).numpy()
            values = (values.T if match.transposed else values).astype(np.float16)
            self.node("Cast", [self.constant(f"{prefix}.float16", values)], output, to=TensorProto.FLOAT)
            return
        assert tensor.indices is not None and tensor.centroids is not None
        if tensor.groups > 1:
            self._grouped_weight(output, match)
            return
        indices = tensor.indices.reshape(tensor.shape)
        indices = (indices.T if match.transposed else indices).reshape(-1)
        codebook = self.constant(f"{prefix}.codebook", tensor.centroids.float().numpy())
        packed = pack_indices(indices, tensor.bits).numpy()
        fields = self._unpack(prefix, packed, tensor.bits, indices.numel())
        gathered = self.node("Gather", [codebook, self.node("Cast", [fields], to=TensorProto.INT64)])
        self.node("Reshape", [gathered, shape_name], output)

    def _grouped_weight(self, output: str, match: _Match) -> None:
        """A weight with a codebook per group: local indices + g * 2^b, Gather, Reshape (then Transpose if used so)."""
        tensor, prefix = match.tensor, match.name
        assert tensor.indices is not None and tensor.centroids is not None
        numel, bits = tensor.numel, tensor.bits
        codebook = self.constant(f"{prefix}.codebook", tensor.centroids.float().numpy())
        fields = self._unpack(prefix, pack_indices(tensor.indices, bits).numpy(), bits, numel)
        position = self.node("Range", [self.constant("group/start", np.array(0, dtype=np.int64)),
                                       self.constant(f"{prefix}.count", np.array(numel, dtype=np.int64)),
                                       self.constant("group/step", np.array(1, dtype=np.int64))])
        group = self.node("Div", [position, self.constant(f"{prefix}.group_len",
                                                          np.array(tensor.group_len, dtype=np.int64))])
        start = self.node("Mul", [group, self.constant(f"group/{bits}.size", np.array(2**bits, dtype=np.int64))])
        index = self.node("Add", [self.node("Cast", [fields], to=TensorProto.INT64), start])
        shape = self.constant(f"{prefix}.shape", np.array(tensor.shape, dtype=np.int64))
        gathered = self.node("Gather", [codebook, index])
        if not match.transposed:
            self.node("Reshape", [gathered, shape], output)
            return
        self.node("Transpose", [self.node("Reshape", [gathered, shape])], output, perm=[1, 0])

    def _unpack(self, prefix: str, packed: np.ndarray, bits: int, numel: int) -> str:
        """uint8 indices, flat (maybe longer than numel when the packed bytes end in padding: then sliced)."""
        if bits == 8:
            return self.constant(f"{prefix}.indices", packed)
        stored = self.constant(f"{prefix}.indices", packed.reshape(-1, 1))
        if 8 % bits == 0:  # field j of a byte: bits [j*b, (j+1)*b), moved to the top, then down to the bottom
            left = np.array([8 - (j + 1) * bits for j in range(8 // bits)], dtype=np.uint8)
            right = np.array([8 - bits], dtype=np.uint8)
            fields = self.node("BitShift", [self.node("BitShift", [stored, self.constant(f"unpack/{bits}.left", left)],
                                                      direction="LEFT"),
                                            self.constant(f"unpack/{bits}.right", right)], direction="RIGHT")
            flat = self.node("Reshape", [fields, self.constant("unpack/flat", np.array([-1], dtype=np.int64))])
            if packed.size * (8 // bits) == numel:
                return flat
            return self.node("Slice", [flat, self.constant("unpack/zero", np.array([0], dtype=np.int64)),
                                       self.constant(f"{prefix}.numel", np.array([numel], dtype=np.int64))])
        # widths that straddle bytes (3 bits): the bit stream, grouped b at a time, weighted 1, 2, 4...
        left = np.arange(7, -1, -1, dtype=np.uint8)
        stream = self.node("BitShift", [self.node("BitShift", [stored, self.constant("unpack/bit.left", left)],
                                                  direction="LEFT"),
                                        self.constant("unpack/bit.right", np.array([7], dtype=np.uint8))],
                           direction="RIGHT")
        flat = self.node("Reshape", [stream, self.constant("unpack/flat", np.array([-1], dtype=np.int64))])
        used = self.node("Slice", [flat, self.constant("unpack/zero", np.array([0], dtype=np.int64)),
                                   self.constant(f"{prefix}.bits", np.array([numel * bits], dtype=np.int64))])
        grouped = self.node("Reshape", [used, self.constant(f"{prefix}.group", np.array([numel, bits]))])
        weighted = self.node("Mul", [self.node("Cast", [grouped], to=TensorProto.INT64),
                                     self.constant(f"unpack/{bits}.weights", 1 << np.arange(bits, dtype=np.int64))])
        total = self.node("ReduceSum", [weighted, self.constant("unpack/one", np.array([1], dtype=np.int64))],
                          keepdims=0)
        return self.node("Cast", [total], to=TensorProto.UINT8)


def _rebuild(matches: dict[str, _Match]) -> _Builder:
    builder = _Builder()
    for output, match in matches.items():
        builder.weight(output, match)
    return builder


# ---------------------------------------------------------------------------------------------- checking


def _rebuilds_exactly(builder: _Builder, expected: dict[str, np.ndarray], opset_imports) -> set[str]:
    """The outputs of `builder`'s subgraph that onnxruntime computes equal to `expected`."""
    if not expected:
        return set()
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in expected]
    graph = helper.make_graph(builder.nodes, "rebuild", [], outputs, list(builder.initializers.values()))
    model = helper.make_model(graph, opset_imports=opset_imports)
    try:
        session = cpu_session(model.SerializeToString(), log_severity=4)
        results = session.run(list(expected), {})
    except Exception:  # onnxruntime raises several unrelated types for an op or type it lacks
        return set()
    return {name for name, value in zip(expected, results, strict=True)
            if value.shape == expected[name].shape and np.array_equal(value, expected[name])}


# ---------------------------------------------------------------------------------------------- the whole graph


def with_codebooks(model: onnx.ModelProto, quantized: dict[str, QuantizedTensor]) -> onnx.ModelProto:
    """A copy of `model` (exported from the dequantized student) whose quantized weights are rebuilt from their
    codebook form; warns, naming each, about the weights kept as float."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    stored = {name: tensor for name, tensor in quantized.items()
              if has_codebook(tensor.bits) or tensor.bits == FP16_BITS}
    by_value = _weights_by_value(stored)

    matches: dict[str, _Match] = {}  # initializer name -> what rebuilds it
    expected: dict[str, np.ndarray] = {}
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(initializer)
        match = by_value.get(_fingerprint(array))
        if match is not None:
            matches[initializer.name], expected[initializer.name] = match, array

    # check the rebuilds together; if that fails, one at a time, so one bad weight does not sink the others
    builder = _rebuild(matches)
    exact = _rebuilds_exactly(builder, expected, model_copy.opset_import)
    if len(exact) < len(matches):
        exact = {output for output, match in matches.items()
                 if _rebuilds_exactly(_rebuild({output: match}), {output: expected[output]}, model_copy.opset_import)}
        builder = _rebuild({output: matches[output] for output in exact})
        if _rebuilds_exactly(builder, {output: expected[output] for output in exact},
                             model_copy.opset_import) != exact:
            exact, builder = set(), _Builder()

    rebuilt_names = {matches[output].name for output in exact}
    for name in stored:
        if name not in rebuilt_names:
            found = any(match.name == name for match in matches.values())
            why = "onnxruntime does not rebuild it exactly" if found else "the exported graph has no initializer " \
                "holding its values"
            warnings.warn(f"ONNX export: {name} ({stored[name].bits}-bit) is kept as float32: {why}", stacklevel=2)

    kept = [initializer for initializer in graph.initializer if initializer.name not in exact]
    del graph.initializer[:]
    graph.initializer.extend(kept + list(builder.initializers.values()))
    nodes = builder.nodes + list(graph.node)  # the rebuilt weights first: a topological order
    del graph.node[:]
    graph.node.extend(nodes)
    compact_names(graph)
    onnx.checker.check_model(model_copy)
    return model_copy


def compact_names(graph: onnx.GraphProto) -> None:
    """Rename every intermediate value to a short name and drop node names and doc strings, in place. Graph inputs,
    outputs and initializers keep theirs. Graphs with subgraphs (If, Loop) are left alone."""
    if any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for attribute in node.attribute):
        return
    keep = {value.name for value in (*graph.input, *graph.output)} | {tensor.name for tensor in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        node.name, node.doc_string = "", ""
        for position, output in enumerate(node.output):
            if output and output not in keep:
                if output not in renamed:
                    short = np.base_repr(len(renamed), 36)
                    renamed[output] = short if short not in keep else f"{short}'"
                node.output[position] = renamed[output]
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]
    del graph.value_info[:]

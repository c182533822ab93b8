"""An ONNX graph open for rewriting, shared by the graph passes (``graph_passes``,
``winograd``): who makes and who reads each value, its constant tensors, fresh names for what a
pass adds, and the node order it leaves."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Graph", "node_attributes", "reduced_axes", "unique_name"]


def unique_name(names: set[str], stem: str) -> str:
    """``stem``, or ``stem_N`` with the first N not in ``names``; added to ``names``."""
    name, k = stem, 0
    while name in names:
        k += 1
        name = f"{stem}_{k}"
    names.add(name)
    return name


class Graph:
    """The graph with who makes and who reads each value, and its constant tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        # each value's readers, a node once per input it fills, None for the graph's output
        self.readers: dict[str, list[onnx.NodeProto | None]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        for output in self.graph.output:
            self.readers.setdefault(output.name, []).append(None)
        self._names = set(self.producer) | set(self.constants) | {i.name for i in self.graph.input}

    def only_reader(self, value: str) -> onnx.NodeProto | None:
        """The one node that reads ``value``, once; None where it is read more than once, by
        the graph's output, or not at all."""
        readers = self.readers.get(value, [])
        return readers[0] if len(readers) == 1 else None

    def made_by(self, value: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(value)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def new_name(self, stem: str) -> str:
        return unique_name(self._names, stem)

    def add_constant(self, stem: str, value: np.ndarray) -> str:
        name = self.new_name(stem)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def replace_nodes(self, nodes: list[onnx.NodeProto]) -> None:
        """The graph's nodes become ``nodes``, in that order (each reader after its makers)."""
        del self.graph.node[:]
        self.graph.node.extend(nodes)


def node_attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def reduced_axes(graph: Graph, node: onnx.NodeProto) -> list[int] | None:
    """A Reduce node's axes, from its attribute or (opset 18) its constant input; None where
    not given or not constant."""
    axes = node_attributes(node).get("axes")
    if len(node.input) > 1 and node.input[1]:
        given = graph.constant(node.input[1])
        axes = None if given is None else given.tolist()
    return axes

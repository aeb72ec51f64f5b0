"""Graph rewrites that make ONNX Runtime fast on the converted models.

Each rewrite keeps the function: the parity tests compare the rewritten
models against the TFLite reference.

PRELU: ONNX Runtime's CPU provider runs convolutions in a blocked channel
layout (NCHWc) and has no blocked PRelu kernel, so it reorders the tensor out
of and back into that layout around each of the landmark model's 23 PRelu
nodes; in a profile that took about 2.8 of 4.8 ms. Written with ops that stay
in the blocked layout, the reorders go away:

    prelu(x) = alpha*x + (1 - alpha)*relu(x)        (x > 0: x;  x <= 0: alpha*x)

which needs only Mul, Relu and Add with per-channel constants (``"affine"``).
Where every slope is below 1, ``(1 - alpha)*relu(x) = relu((1 - alpha)*x)``, so
the Relu fuses into the scaling convolution ONNX Runtime makes of the Mul
(``"scaled"``; nodes with a slope >= 1 fall back to ``"affine"``). The form
from the stack notes, ``relu(x) + alpha*min(x, 0)`` (``"min"``), is kept for
comparison.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import ModelError

PreluForm = Literal["prelu", "min", "affine", "scaled"]
PRELU_FORMS: tuple[PreluForm, ...] = ("prelu", "min", "affine", "scaled")


def rewrite_prelu(model: onnx.ModelProto, form: PreluForm = "scaled") -> onnx.ModelProto:
    """A copy of ``model`` with every PRelu (constant slope) replaced by ``form``.

    ``"prelu"`` returns an unchanged copy. Raises ModelError for a PRelu whose
    slope is not an initializer.
    """
    if form not in PRELU_FORMS:
        raise ModelError(f"unknown PRELU form {form!r}", f"use one of {', '.join(PRELU_FORMS)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if form == "prelu":
        return out
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    dead_inits: set[str] = set()
    for node in graph.node:
        if node.op_type != "PRelu":
            new_nodes.append(node)
            continue
        x, slope_name = node.input
        if slope_name not in inits:
            raise ModelError(
                f"PRelu '{node.name}' has a non-constant slope",
                "only constant slopes can be rewritten",
            )
        alpha = numpy_helper.to_array(inits[slope_name]).astype(np.float32)
        y = node.output[0]
        base = node.name or y
        if form == "min":
            zero = f"{base}/zero"
            graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), zero))
            new_nodes += [
                helper.make_node("Relu", [x], [f"{base}/pos"], name=f"{base}/Relu"),
                helper.make_node("Min", [x, zero], [f"{base}/neg"], name=f"{base}/Min"),
                helper.make_node(
                    "Mul", [f"{base}/neg", slope_name], [f"{base}/neg_scaled"], name=f"{base}/Mul"
                ),
                helper.make_node(
                    "Add", [f"{base}/pos", f"{base}/neg_scaled"], [y], name=f"{base}/Add"
                ),
            ]
        elif form == "scaled" and np.all(alpha < 1.0):
            # (1 - a) * relu(x) == relu((1 - a) * x) when 1 - a > 0: the Relu then fuses
            # into the scaling, which ONNX Runtime runs as a blocked 1x1 convolution.
            one_minus = f"{base}/one_minus_slope"
            graph.initializer.append(
                numpy_helper.from_array((1.0 - alpha).astype(np.float32), one_minus)
            )
            new_nodes += [
                helper.make_node("Mul", [x, one_minus], [f"{base}/scaled"], name=f"{base}/MulPos"),
                helper.make_node("Relu", [f"{base}/scaled"], [f"{base}/pos"], name=f"{base}/Relu"),
                helper.make_node("Mul", [x, slope_name], [f"{base}/lin"], name=f"{base}/MulLin"),
                helper.make_node("Add", [f"{base}/lin", f"{base}/pos"], [y], name=f"{base}/Add"),
            ]
        else:
            one_minus = f"{base}/one_minus_slope"
            graph.initializer.append(
                numpy_helper.from_array((1.0 - alpha).astype(np.float32), one_minus)
            )
            new_nodes += [
                helper.make_node("Relu", [x], [f"{base}/pos"], name=f"{base}/Relu"),
                helper.make_node(
                    "Mul", [f"{base}/pos", one_minus], [f"{base}/pos_scaled"], name=f"{base}/MulPos"
                ),
                helper.make_node("Mul", [x, slope_name], [f"{base}/lin"], name=f"{base}/MulLin"),
                helper.make_node(
                    "Add", [f"{base}/lin", f"{base}/pos_scaled"], [y], name=f"{base}/Add"
                ),
            ]
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    dead_inits = {t.name for t in graph.initializer if t.name not in used}
    if dead_inits:
        keep = [t for t in graph.initializer if t.name not in dead_inits]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return out


def rewrite_channel_pad(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with zero channel padding written as a 1x1 convolution.

    The models widen residual branches with ``Pad`` on the channel axis. ONNX
    Runtime has no blocked-layout Pad, so each one drops the rest of the block
    out of the fast layout. A 1x1 Conv whose weight is an identity shifted by
    the leading pad gives the same result exactly (products with 1 and 0) and
    stays in that layout. Pads that touch other axes are left alone.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    shapes = _channel_counts(out)
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        pads_name = node.input[1] if node.op_type == "Pad" and len(node.input) > 1 else ""
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        if (
            not pads_name
            or pads_name not in inits
            or len(node.input) > 2
            or mode != b"constant"
            or node.input[0] not in shapes
        ):
            new_nodes.append(node)
            continue
        pads = numpy_helper.to_array(inits[pads_name]).astype(np.int64)
        if pads.shape != (8,) or np.any(np.delete(pads, [1, 5]) != 0) or np.any(pads < 0):
            new_nodes.append(node)
            continue
        c_in = shapes[node.input[0]]
        before, after = int(pads[1]), int(pads[5])
        weight = np.zeros((c_in + before + after, c_in, 1, 1), np.float32)
        weight[np.arange(c_in) + before, np.arange(c_in), 0, 0] = 1.0
        w_name = f"{node.name or node.output[0]}/identity"
        graph.initializer.append(numpy_helper.from_array(weight, w_name))
        new_nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], w_name],
                list(node.output),
                name=f"{node.name or node.output[0]}/as_conv",
                kernel_shape=[1, 1],
            )
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return out


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Channel count (axis 1) of every rank-4 tensor whose shape ONNX can infer."""
    inferred = onnx.shape_inference.infer_shapes(model)
    counts: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            counts[vi.name] = int(dims[1].dim_value)
    return counts


def optimize_for_ort(model: onnx.ModelProto, prelu_form: PreluForm = "scaled") -> onnx.ModelProto:
    """All speed rewrites, in the order the build applies them."""
    return rewrite_channel_pad(rewrite_prelu(model, prelu_form))

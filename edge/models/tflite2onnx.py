"""A focused TFLite -> ONNX converter for the two MediaPipe face models.

Covers exactly the ops those models use (ADD, CONV_2D, DEPTHWISE_CONV_2D,
DEQUANTIZE of fp16 weights, MAX_POOL_2D, PAD, PRELU, RELU, RESHAPE,
CONCATENATION, fused RELU/RELU6); any other op is a :class:`ModelError`.

Layout: TFLite is NHWC, ONNX convolutions are NCHW. The ONNX model keeps the
TFLite input layout (``[1, H, W, 3]`` float32, NHWC) and starts with one
Transpose; every rank-4 activation inside is NCHW; outputs are transposed back
to TFLite's NHWC order before any reshape, so element order matches TFLite.

Pitfalls handled (measured, see the project's stack notes):
- SAME padding is asymmetric in TFLite: the extra row/column goes at the
  bottom/right, so explicit ONNX ``pads`` are computed, never ``auto_pad``.
- Conv weights OHWI -> OIHW; depthwise ``[1, KH, KW, C*M]`` -> ``[C*M, 1, KH, KW]``
  with ``group = C``; PRELU slopes ``[1, 1, C]`` -> ``[C, 1, 1]``.
- PAD paddings ``[4, 2]`` in NHWC order are permuted to NCHW (the models pad channels).
- fp16 weights behind DEQUANTIZE become fp32 initializers.

The output is deterministic: same ``.tflite`` bytes and options give the same
ONNX bytes (fixed producer, IR version and opset; no timestamps).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError

OPSET = 13
IR_VERSION = 8  # the IR that goes with opset 13; fixed so the bytes do not follow the onnx package
PRODUCER_NAME = "edge-ar-surgical tflite2onnx"
PRODUCER_VERSION = "1"

_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)
_AXIS_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_ACT_NONE, _ACT_RELU, _ACT_RELU6 = 0, 1, 3
_PAD_SAME, _PAD_VALID = 0, 1
_TFL_FLOAT32, _TFL_FLOAT16, _TFL_INT32, _TFL_INT64 = 0, 1, 2, 4
_NP_TYPES = {
    _TFL_FLOAT32: np.float32,
    _TFL_FLOAT16: np.float16,
    _TFL_INT32: np.int32,
    _TFL_INT64: np.int64,
}


@dataclass(frozen=True)
class OutputMap:
    """How one TFLite output appears in the ONNX model."""

    tflite_name: str
    onnx_name: str
    shape: tuple[int, ...]  # final ONNX shape (a reshape of TFLite's NHWC output)


def same_pads(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (begin, end) for one spatial axis; the odd pixel goes at the end."""
    out = -(-in_size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


class _Converter:
    def __init__(self, model_bytes: bytes) -> None:
        try:
            self.model = tflite.Model.GetRootAsModel(model_bytes, 0)
            if self.model.SubgraphsLength() != 1:
                raise ModelError(
                    f"TFLite model has {self.model.SubgraphsLength()} subgraphs, expected 1",
                    "only single-graph models are supported",
                )
            self.graph = self.model.Subgraphs(0)
        except ModelError:
            raise
        except Exception as exc:  # the flatbuffer reader raises assorted errors on junk input
            raise ModelError(
                f"cannot parse the TFLite model ({exc})", "re-extract it with `edge models fetch`"
            ) from None
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.consts: dict[int, np.ndarray] = {}  # TFLite tensor index -> value (TFLite layout)
        self.names: dict[int, str] = {}  # activation tensor index -> ONNX name
        self.nchw: set[int] = set()  # activation tensors held as NCHW in the ONNX graph
        self.used_names: set[str] = set()
        self._load_constants()

    # ------------------------------------------------------------------ helpers
    def tensor(self, idx: int) -> tflite.Tensor:
        return self.graph.Tensors(idx)

    def shape(self, idx: int) -> tuple[int, ...]:
        t = self.tensor(idx)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def tname(self, idx: int) -> str:
        return self.tensor(idx).Name().decode("utf-8")

    def unique(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_./:-]", "_", base) or "t"
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}__{k}"
        self.used_names.add(name)
        return name

    def _load_constants(self) -> None:
        for idx in range(self.graph.TensorsLength()):
            t = self.tensor(idx)
            buf = self.model.Buffers(t.Buffer())
            if buf is None or buf.DataLength() == 0:
                continue
            dtype = _NP_TYPES.get(t.Type())
            if dtype is None:
                raise ModelError(
                    f"tensor '{self.tname(idx)}' has unsupported TFLite type {t.Type()}",
                    "this converter handles float32/float16/int32/int64 constants only",
                )
            data = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype)
            self.consts[idx] = data.reshape(self.shape(idx)).copy()

    def const(self, idx: int, what: str) -> np.ndarray:
        if idx not in self.consts:
            raise ModelError(
                f"{what} '{self.tname(idx)}' is not a constant",
                "this converter needs constant weights",
            )
        return self.consts[idx]

    def initializer(self, base: str, value: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def act(self, idx: int) -> str:
        if idx not in self.names:
            if idx in self.consts:  # a constant used as an activation (e.g. ADD with a bias)
                value = self.consts[idx].astype(np.float32)
                if value.ndim == 4:
                    value = value.transpose(_NHWC_TO_NCHW)
                    self.nchw.add(idx)
                self.names[idx] = self.initializer(self.tname(idx), value)
            else:
                raise ModelError(
                    f"tensor '{self.tname(idx)}' is used before it is produced",
                    "the TFLite graph is not in topological order",
                )
        return self.names[idx]

    def node(self, op: str, inputs: Sequence[str], out_base: str, **attrs: Any) -> str:
        out = self.unique(out_base)
        self.nodes.append(
            helper.make_node(op, list(inputs), [out], name=self.unique(f"{op}:{out}"), **attrs)
        )
        return out

    def define(self, idx: int, name: str, nchw: bool) -> None:
        self.names[idx] = name
        if nchw:
            self.nchw.add(idx)

    def require_nchw(self, idx: int, op: str) -> None:
        if idx not in self.nchw:
            raise ModelError(
                f"{op} on tensor '{self.tname(idx)}' of shape {self.shape(idx)} is not supported",
                "this converter handles 4-D NHWC activations only for this op",
            )

    def fused(self, name: str, act: int, out_idx: int) -> str:
        if act == _ACT_NONE:
            return name
        if act == _ACT_RELU:
            return self.node("Relu", [name], self.tname(out_idx))
        if act == _ACT_RELU6:
            lo = self.initializer("relu6_min", np.array(0.0, np.float32))
            hi = self.initializer("relu6_max", np.array(6.0, np.float32))
            return self.node("Clip", [name, lo, hi], self.tname(out_idx))
        raise ModelError(
            f"fused activation {act} on '{self.tname(out_idx)}' is not supported",
            "this converter handles NONE, RELU and RELU6",
        )

    # ------------------------------------------------------------------ ops
    def convert_op(self, op_index: int) -> None:
        op = self.graph.Operators(op_index)
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = _OP_NAMES.get(builtin, str(builtin))
        ins = [op.Inputs(i) for i in range(op.InputsLength())]
        outs = [op.Outputs(i) for i in range(op.OutputsLength())]
        handler = getattr(self, f"op_{name.lower()}", None)
        if handler is None:
            raise ModelError(
                f"TFLite op {name} (operator {op_index}) is not supported by the converter",
                "extend edge/models/tflite2onnx.py or pick a model that uses the supported ops",
            )
        handler(op, ins, outs)

    def _options(self, op: tflite.Operator, cls: type) -> Any:
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        return opts

    def op_dequantize(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        value = self.const(ins[0], "DEQUANTIZE input")
        if value.dtype != np.float16:
            raise ModelError(
                f"DEQUANTIZE of {value.dtype} tensor '{self.tname(ins[0])}' is not supported",
                "only fp16 weights are handled (no int8 quantisation)",
            )
        self.consts[outs[0]] = value.astype(np.float32)

    def _conv(self, op: tflite.Operator, ins: list[int], outs: list[int], depthwise: bool) -> None:
        x, w_idx = ins[0], ins[1]
        self.require_nchw(x, "CONV_2D")
        w = self.const(w_idx, "convolution weight").astype(np.float32)
        if depthwise:
            opts = self._options(op, tflite.DepthwiseConv2DOptions)
            group = self.shape(x)[3]
            weight = w.transpose(3, 0, 1, 2)  # [1,KH,KW,C*M] -> [C*M,1,KH,KW]
        else:
            opts = self._options(op, tflite.Conv2DOptions)
            group = 1
            weight = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        kh, kw = weight.shape[2], weight.shape[3]
        sh, sw = opts.StrideH(), opts.StrideW()
        dh, dw = opts.DilationHFactor(), opts.DilationWFactor()
        _, h, wd, _ = self.shape(x)
        if opts.Padding() == _PAD_SAME:
            top, bottom = same_pads(h, kh, sh, dh)
            left, right = same_pads(wd, kw, sw, dw)
        else:
            top = bottom = left = right = 0
        base = self.tname(outs[0])
        inputs = [self.act(x), self.initializer(f"{base}/weight", weight)]
        if len(ins) > 2 and ins[2] >= 0:
            bias = self.const(ins[2], "convolution bias").astype(np.float32)
            inputs.append(self.initializer(f"{base}/bias", bias))
        out = self.node(
            "Conv",
            inputs,
            base if opts.FusedActivationFunction() == _ACT_NONE else f"{base}/pre_act",
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            dilations=[dh, dw],
            pads=[top, left, bottom, right],
            group=group,
        )
        self.define(outs[0], self.fused(out, opts.FusedActivationFunction(), outs[0]), True)

    def op_conv_2d(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        self._conv(op, ins, outs, depthwise=False)

    def op_depthwise_conv_2d(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        self._conv(op, ins, outs, depthwise=True)

    def op_max_pool_2d(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        x = ins[0]
        self.require_nchw(x, "MAX_POOL_2D")
        opts = self._options(op, tflite.Pool2DOptions)
        kh, kw = opts.FilterHeight(), opts.FilterWidth()
        sh, sw = opts.StrideH(), opts.StrideW()
        _, h, wd, _ = self.shape(x)
        if opts.Padding() == _PAD_SAME:
            top, bottom = same_pads(h, kh, sh)
            left, right = same_pads(wd, kw, sw)
        else:
            top = bottom = left = right = 0
        base = self.tname(outs[0])
        out = self.node(
            "MaxPool",
            [self.act(x)],
            base,
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            pads=[top, left, bottom, right],
        )
        self.define(outs[0], self.fused(out, opts.FusedActivationFunction(), outs[0]), True)

    def op_add(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        a, b = ins[0], ins[1]
        variables = [i for i in (a, b) if i not in self.consts]
        layouts = {i in self.nchw for i in variables}
        if not variables or len(layouts) > 1 or len({len(self.shape(i)) for i in variables}) > 1:
            raise ModelError(
                f"ADD at '{self.tname(outs[0])}' mixes layouts or ranks, or has no activation",
                "this converter adds activations of one layout and rank (or one constant)",
            )
        nchw = layouts == {True}
        names = [self._add_operand(i, nchw) for i in (a, b)]
        opts = self._options(op, tflite.AddOptions)
        base = self.tname(outs[0])
        act = opts.FusedActivationFunction()
        out = self.node("Add", names, base if act == _ACT_NONE else f"{base}/pre_act")
        self.define(outs[0], self.fused(out, act, outs[0]), nchw)

    def _add_operand(self, idx: int, nchw: bool) -> str:
        """An ADD input; a constant broadcast along NHWC's last axis moves to NCHW's axis 1."""
        if idx not in self.consts or not nchw:
            return self.act(idx)
        value = self.consts[idx].astype(np.float32)
        if value.ndim == 4:
            value = value.transpose(_NHWC_TO_NCHW)
        elif value.size > 1:
            if value.size != value.shape[-1]:
                raise ModelError(
                    f"ADD constant '{self.tname(idx)}' of shape {value.shape} is not supported",
                    "only scalar, per-channel or full 4-D constants are handled",
                )
            value = value.reshape(-1, 1, 1)  # [..., C] -> [C, 1, 1]
        return self.initializer(self.tname(idx), value)

    def op_relu(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        out = self.node("Relu", [self.act(ins[0])], self.tname(outs[0]))
        self.define(outs[0], out, ins[0] in self.nchw)

    def op_relu6(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        self.define(outs[0], self.fused(self.act(ins[0]), _ACT_RELU6, outs[0]), ins[0] in self.nchw)

    def op_prelu(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        x = ins[0]
        self.require_nchw(x, "PRELU")
        alpha = self.const(ins[1], "PRELU slope").astype(np.float32)
        channels = self.shape(x)[3]
        if alpha.size == channels:
            slope = alpha.reshape(channels, 1, 1)  # [1,1,C] (NHWC) -> [C,1,1] (NCHW)
        elif alpha.size == 1:
            slope = alpha.reshape(1, 1, 1)
        else:
            raise ModelError(
                f"PRELU slope of shape {alpha.shape} at '{self.tname(outs[0])}' is not supported",
                "only per-channel or scalar slopes are handled",
            )
        base = self.tname(outs[0])
        out = self.node("PRelu", [self.act(x), self.initializer(f"{base}/slope", slope)], base)
        self.define(outs[0], out, True)

    def op_pad(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        x = ins[0]
        self.require_nchw(x, "PAD")
        paddings = self.const(ins[1], "PAD paddings").astype(np.int64).reshape(4, 2)
        nchw = paddings[list(_NHWC_TO_NCHW)]
        pads = np.concatenate([nchw[:, 0], nchw[:, 1]]).astype(np.int64)
        base = self.tname(outs[0])
        out = self.node("Pad", [self.act(x), self.initializer(f"{base}/pads", pads)], base)
        self.define(outs[0], out, True)

    def _nhwc(self, idx: int) -> str:
        """The ONNX name of a tensor in TFLite's own (NHWC) element order."""
        name = self.act(idx)
        if idx in self.nchw:
            return self.node("Transpose", [name], f"{self.tname(idx)}/nhwc", perm=_NCHW_TO_NHWC)
        return name

    def op_reshape(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        target = np.array(self.shape(outs[0]), np.int64)
        base = self.tname(outs[0])
        out = self.node(
            "Reshape", [self._nhwc(ins[0]), self.initializer(f"{base}/shape", target)], base
        )
        self.define(outs[0], out, False)

    def op_concatenation(self, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        opts = self._options(op, tflite.ConcatenationOptions)
        layouts = {i in self.nchw for i in ins}
        if len(layouts) > 1:
            raise ModelError(
                f"CONCATENATION of mixed layouts at '{self.tname(outs[0])}'",
                "this converter concatenates tensors of one layout only",
            )
        rank = len(self.shape(outs[0]))
        axis = opts.Axis() % rank
        nchw = layouts == {True}
        if nchw:
            axis = _AXIS_NHWC_TO_NCHW[axis]
        base = self.tname(outs[0])
        act = opts.FusedActivationFunction()
        names = [self.act(i) for i in ins]
        out = self.node("Concat", names, base if act == _ACT_NONE else f"{base}/pre_act", axis=axis)
        self.define(outs[0], self.fused(out, act, outs[0]), nchw)

    # ------------------------------------------------------------------ whole graph
    def convert(
        self, input_name: str, outputs: Sequence[OutputMap], graph_name: str
    ) -> onnx.ModelProto:
        if self.graph.InputsLength() != 1:
            raise ModelError(
                f"TFLite model has {self.graph.InputsLength()} inputs, expected 1",
                "only single-input models are supported",
            )
        in_idx = self.graph.Inputs(0)
        in_shape = self.shape(in_idx)
        if len(in_shape) != 4 or self.tensor(in_idx).Type() != _TFL_FLOAT32:
            raise ModelError(
                f"TFLite input '{self.tname(in_idx)}' is {in_shape}, expected float32 NHWC",
                "only image models with a float32 [1, H, W, C] input are supported",
            )
        # Reserve the graph's own names so that inner tensors never take them.
        self.used_names.update([input_name, *(spec.onnx_name for spec in outputs)])
        nchw_in = self.node("Transpose", [input_name], f"{input_name}/nchw", perm=_NHWC_TO_NCHW)
        self.define(in_idx, nchw_in, True)
        for i in range(self.graph.OperatorsLength()):
            self.convert_op(i)

        by_name = {
            self.tname(self.graph.Outputs(i)): self.graph.Outputs(i)
            for i in range(self.graph.OutputsLength())
        }
        graph_outputs = []
        for spec in outputs:
            if spec.tflite_name not in by_name:
                raise ModelError(
                    f"TFLite model has no output '{spec.tflite_name}' (it has {sorted(by_name)})",
                    "fix the output names in models/manifest.toml",
                )
            idx = by_name[spec.tflite_name]
            src = self._nhwc(idx)
            if int(np.prod(self.shape(idx))) != int(np.prod(spec.shape)):
                raise ModelError(
                    f"output '{spec.onnx_name}' shape {spec.shape} does not fit "
                    f"TFLite's {self.shape(idx)}",
                    "fix the output shape in models/manifest.toml",
                )
            shape = self.initializer(f"{spec.onnx_name}/shape", np.array(spec.shape, np.int64))
            self.nodes.append(
                helper.make_node(
                    "Reshape",
                    [src, shape],
                    [spec.onnx_name],
                    name=self.unique(f"Reshape:{spec.onnx_name}"),
                )
            )
            graph_outputs.append(
                helper.make_tensor_value_info(spec.onnx_name, TensorProto.FLOAT, list(spec.shape))
            )
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(in_shape))],
            graph_outputs,
            initializer=self.initializers,
        )
        return make_model(graph)


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Wrap a graph with the fixed producer, IR version and opset (deterministic bytes)."""
    model = helper.make_model(
        graph,
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    return model


def convert_tflite(
    model_bytes: bytes,
    input_name: str,
    outputs: Sequence[OutputMap],
    graph_name: str = "model",
) -> onnx.ModelProto:
    """Convert a TFLite flatbuffer to an ONNX model (opset 13), faithful op for op.

    ``input_name`` names the ONNX input (NHWC, as in TFLite); ``outputs`` maps
    each TFLite output to its ONNX name and final shape. Raises ModelError for
    unparsable input or an unsupported op, layout or dtype.
    """
    model = _Converter(model_bytes).convert(input_name, outputs, graph_name)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError and shape-inference errors
        raise ModelError(f"converted model fails the ONNX checker: {exc}") from None
    return model


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic protobuf bytes of a model."""
    return model.SerializeToString(deterministic=True)


def op_histogram(model: onnx.ModelProto) -> Mapping[str, int]:
    """How many nodes of each op type a model has (for reports and tests)."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))

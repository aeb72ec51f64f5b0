"""ONNX Runtime sessions on tiny generated models: provider fallback, manifest checks, layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.errors import ModelError
from edge.models.manifest import InputSpec, ModelSpec, OutputSpec
from edge.tracking.runtime import OrtModel


def _spec(shape=(1, 8, 8, 3), layout="NHWC", out_shape=(1, 3)) -> ModelSpec:
    return ModelSpec(
        key="tiny",
        file="tiny.onnx",
        sha256="0" * 64,
        source_path="",
        source_sha256="0" * 64,
        license="Apache-2.0",
        description="test model",
        prelu_form="affine",
        input=InputSpec(name="input", shape=shape, layout=layout),
        outputs=(OutputSpec(name="mean", shape=out_shape),),
    )


def _tiny_model(path: Path, shape=(1, 8, 8, 3), axes=(1, 2)) -> Path:
    """A model whose output is the input averaged over ``axes`` (keeps the channel axis)."""
    node = helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], list(axes))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_runs_on_cpu_and_reports_the_provider(tmp_path):
    model = OrtModel(_tiny_model(tmp_path / "tiny.onnx"), _spec(), intra_op_threads=1)
    assert model.provider == "CPUExecutionProvider"
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[..., 1] = 2.0
    np.testing.assert_allclose(model.run(x)[0], [[0.0, 2.0, 0.0]])


def test_unavailable_provider_falls_back_to_cpu_with_a_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.tracking.runtime")
    model = OrtModel(
        _tiny_model(tmp_path / "tiny.onnx"),
        _spec(),
        providers=("TensorrtExecutionProvider", "CPUExecutionProvider"),
    )
    assert model.provider == "CPUExecutionProvider"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "TensorrtExecutionProvider" in warned[0].getMessage()


def test_nchw_model_gets_nhwc_input_transposed(tmp_path):
    path = _tiny_model(tmp_path / "tiny.onnx", shape=(1, 3, 8, 8), axes=(2, 3))
    model = OrtModel(path, _spec(shape=(1, 3, 8, 8), layout="NCHW"))
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[..., 2] = 1.0
    np.testing.assert_allclose(model.run(x)[0], [[0.0, 0.0, 1.0]])


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"does not exist.*edge models fetch"):
        OrtModel(tmp_path / "absent.onnx", _spec())


def test_garbage_model_file_is_a_model_error(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot load model"):
        OrtModel(path, _spec())


def test_input_not_matching_the_manifest_is_refused(tmp_path):
    path = _tiny_model(tmp_path / "tiny.onnx", shape=(1, 16, 16, 3))
    with pytest.raises(ModelError, match="manifest says 'input' float32 \\[1, 8, 8, 3\\]"):
        OrtModel(path, _spec())


def test_output_not_matching_the_manifest_is_refused(tmp_path):
    path = _tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(ModelError, match="'mean' \\[1, 4\\]"):
        OrtModel(path, _spec(out_shape=(1, 4)))


def test_wrong_tensor_is_refused_before_running(tmp_path):
    model = OrtModel(_tiny_model(tmp_path / "tiny.onnx"), _spec())
    with pytest.raises(ValueError, match="float32"):
        model.run(np.zeros((1, 8, 8, 3), np.float64))
    with pytest.raises(ModelError, match="intra_op_threads"):
        OrtModel(tmp_path / "tiny.onnx", _spec(), intra_op_threads=0)

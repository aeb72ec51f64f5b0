"""LiteRT (the TFLite runtime, XNNPACK delegate): the landmark model's other runtime.

:class:`LiteRtModel` runs a model's source ``.tflite`` (kept by ``edge models fetch``
next to the ONNX file, checked against the manifest's ``source_sha256``) behind the
same :class:`~edge.tracking.runtime.ModelRunner` interface as ONNX Runtime: one NHWC
float32 tensor in, the manifest's outputs out, in manifest order and shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.models.manifest import InputSpec, ModelSpec

PROVIDER = "LiteRT (XNNPACK)"


def litert_available() -> bool:
    """Whether the ``ai-edge-litert`` package can be imported here."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class LiteRtModel:
    """One LiteRT interpreter for one model's source ``.tflite``.

    Raises ModelError when LiteRT is not installed, the file cannot be loaded, or its
    input or outputs are not the manifest's (the TFLite output named ``tflite_name``
    must hold as many values as the manifest's output).
    """

    provider = PROVIDER

    def __init__(self, path: str | Path, model: ModelSpec, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "LiteRT (ai-edge-litert) is not installed",
                'install the project\'s dependencies, or set tracking.runtime = "onnxruntime"',
            ) from None
        self.path = Path(path)
        self.name = model.key
        self.spec: InputSpec = model.input
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"LiteRT cannot load {self.path}: {str(exc).splitlines()[0]}",
                "run `edge models fetch` to extract it again",
            ) from None
        (inp,) = self._interp.get_input_details()
        if tuple(inp["shape"]) != tuple(model.input.shape) or inp["dtype"] != np.float32:
            raise ModelError(
                f"{self.path} takes {inp['dtype'].__name__} {list(inp['shape'])}, the manifest"
                f" says float32 {list(model.input.shape)}",
                "run `edge models fetch` to extract the pinned source again",
            )
        self._input = inp["index"]
        by_name = {d["name"]: d for d in self._interp.get_output_details()}
        self._outputs: list[tuple[int, tuple[int, ...]]] = []
        for out in model.outputs:
            detail = by_name.get(out.tflite_name)
            if detail is None or int(np.prod(detail["shape"])) != int(np.prod(out.shape)):
                raise ModelError(
                    f"{self.path} has no output '{out.tflite_name}' of {list(out.shape)}"
                    f" (it has {sorted(by_name)})",
                    "run `edge models fetch` to extract the pinned source again",
                )
            self._outputs.append((detail["index"], tuple(out.shape)))

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one NHWC float32 tensor (1, H, W, 3); the outputs in manifest order."""
        want = (1, self.spec.height, self.spec.width, 3)
        if x.shape != want or x.dtype != np.float32:
            raise ValueError(f"{self.name}: input must be float32 {want}, got {x.dtype} {x.shape}")
        self._interp.set_tensor(self._input, x)
        self._interp.invoke()
        return [self._interp.get_tensor(i).reshape(shape) for i, shape in self._outputs]

"""ONNX Runtime sessions: one per model, execution providers chosen by configuration.

A :class:`ModelRunner` is what the detector and the landmark model call: it
takes one NHWC float32 image tensor and returns the model's outputs. The ONNX
implementation (:class:`OrtModel`) adapts the layout when the model wants NCHW
and checks the model's input against what the caller expects (the manifest),
so a model built for another input is refused before it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.errors import ModelError
from edge.models.manifest import InputSpec, Manifest, ModelSpec, load_manifest

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
# Providers the project knows how to use, in the order we prefer them when several are asked for.
KNOWN_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    CPU,
)


class ModelRunner(Protocol):
    """Runs a single-input image model. ``x`` is (1, H, W, 3) float32 (NHWC).

    ``spec`` is the model's input as the manifest describes it (size, value range).
    """

    name: str
    spec: InputSpec

    def run(self, x: np.ndarray) -> list[np.ndarray]: ...


def choose_providers(
    requested: Sequence[str], available: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Providers to pass to ONNX Runtime, and the requested ones that are missing.

    Unknown names are reported as missing. The CPU provider always comes last
    as the fallback, so the result is never empty.
    """
    chosen: list[str] = []
    missing: list[str] = []
    for name in requested:
        if name in available and name in KNOWN_PROVIDERS:
            if name not in chosen:
                chosen.append(name)
        else:
            missing.append(name)
    if CPU in chosen:
        chosen.remove(CPU)
    chosen.append(CPU)
    return chosen, missing


def _shape_matches(actual: Sequence[Any], expected: Sequence[int]) -> bool:
    if len(actual) != len(expected):
        return False
    # A symbolic or unknown dimension (a str or None) accepts any size.
    return all(not isinstance(a, int) or a == e for a, e in zip(actual, expected, strict=True))


class OrtModel:
    """One ONNX Runtime session for one model.

    ``path`` should come from the models API (checksum verified). Raises
    :class:`ModelError` when the file is missing or unreadable, or when its
    input or outputs do not match the manifest entry ``model`` (name, shape,
    dtype): a model built for another input is refused before it runs.
    """

    def __init__(
        self,
        path: str | Path,
        model: ModelSpec,
        providers: Sequence[str] = (CPU,),
        intra_op_threads: int = 2,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.name = model.key
        self.spec: InputSpec = model.input
        spec = model.input
        if intra_op_threads < 1:
            raise ModelError(
                f"intra_op_threads must be at least 1, got {intra_op_threads}",
                "set tracking.intra_op_threads to 1 or more",
            )
        if not self.path.is_file():
            raise ModelError(
                f"model file {self.path} does not exist", "run `edge models fetch` to build it"
            )
        chosen, missing = choose_providers(list(providers), ort.get_available_providers())
        if missing:
            log.warning(
                "%s: execution providers %s are not available in this onnxruntime; using %s",
                self.name,
                ", ".join(missing),
                ", ".join(chosen),
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=chosen
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(
                f"cannot load model {self.path}: {str(exc).splitlines()[0]}",
                "run `edge models fetch` to rebuild it",
            ) from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"model {self.path} has {len(inputs)} inputs, expected 1 image input",
                "run `edge models fetch` to rebuild it",
            )
        self._input_name = inputs[0].name
        if (
            inputs[0].name != spec.name
            or not _shape_matches(inputs[0].shape, spec.shape)
            or inputs[0].type != "tensor(float)"
        ):
            raise ModelError(
                f"model {self.path} takes '{inputs[0].name}' {inputs[0].type} "
                f"{list(inputs[0].shape)} but the manifest says '{spec.name}' float32 "
                f"{list(spec.shape)} ({spec.layout})",
                "run `edge models fetch` to rebuild the model from the manifest",
            )
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        for out in model.outputs:
            if out.name not in outputs or not _shape_matches(outputs[out.name], out.shape):
                raise ModelError(
                    f"model {self.path} has outputs {outputs} but the manifest wants "
                    f"'{out.name}' {list(out.shape)}",
                    "run `edge models fetch` to rebuild the model from the manifest",
                )
        # Outputs in manifest order, so decoders can rely on it.
        self._output_names = [o.name for o in model.outputs]
        self.providers: list[str] = list(self._session.get_providers())
        log.info("%s: running on %s", self.name, self.provider)

    @property
    def provider(self) -> str:
        """The execution provider that runs this model (the first one ONNX Runtime accepted)."""
        return self.providers[0]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one NHWC float32 tensor (1, H, W, 3); returns the outputs in manifest order."""
        want = (1, self.spec.height, self.spec.width, 3)
        if x.shape != want or x.dtype != np.float32:
            raise ValueError(f"{self.name}: input must be float32 {want}, got {x.dtype} {x.shape}")
        if self.spec.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        outputs = self._session.run(self._output_names, {self._input_name: x})
        return [np.asarray(o) for o in outputs]


def open_model(
    name: str,
    models_dir: str | Path,
    providers: Sequence[str] = (CPU,),
    intra_op_threads: int = 2,
    manifest: Manifest | None = None,
) -> OrtModel:
    """Open manifest model ``name`` from ``models_dir`` after the models API has verified it.

    Raises ModelError when the file is missing, fails its SHA-256, or does not
    match the manifest's input and outputs.
    """
    from edge.models.fetch import verified_model_path

    manifest = manifest or load_manifest()
    path = verified_model_path(name, models_dir, manifest)
    return OrtModel(path, manifest.model(name), providers, intra_op_threads)

"""ONNX Runtime sessions: one per model, execution providers chosen by configuration; and
the landmark model's runtime chosen per machine (``[tracking] runtime = "auto"``).

A :class:`ModelRunner` is what the detector and the landmark model call: it
takes one NHWC float32 image tensor and returns the model's outputs. The ONNX
implementation (:class:`OrtModel`) adapts the layout when the model wants NCHW
and checks the model's input against what the caller expects (the manifest),
so a model built for another input is refused before it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


# ----------------------------------------------------------------------------- runtime choice

RUNTIMES = ("onnxruntime", "litert")
TRIAL_WARMUP = 10  # runs per runtime before timing (first runs allocate)
TRIAL_ROUNDS = 5  # runtimes take turns, so that load from other processes hits each alike
TRIAL_RUNS = 10  # timed runs per runtime per round
# Another runtime must be this much faster than ONNX Runtime to be chosen: ORT stays the
# default wherever the two are within the noise of a start-up measurement.
CHOICE_MARGIN = 0.95


@dataclass(frozen=True)
class RuntimeTrial:
    """The start-up measurement of ``[tracking] runtime = "auto"``: median ms per inference
    of the landmark model under each runtime tried, on the same input, and the choice."""

    chosen: str
    median_ms: dict[str, float]
    not_tried: dict[str, str] = field(default_factory=dict)  # runtime -> why

    def as_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "median_ms": self.median_ms, "not_tried": self.not_tried}


def time_runners(
    runners: Mapping[str, ModelRunner],
    x: np.ndarray,
    rounds: int = TRIAL_ROUNDS,
    runs: int = TRIAL_RUNS,
    warmup: int = TRIAL_WARMUP,
) -> dict[str, float]:
    """Median ms per ``run(x)`` of each runner, the runners taking turns in ``rounds``."""
    for runner in runners.values():
        for _ in range(warmup):
            runner.run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            for _ in range(runs):
                start = time.perf_counter()
                runner.run(x)
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(t)) for name, t in times.items()}


def choose_runtime(median_ms: Mapping[str, float]) -> str:
    """The fastest runtime, but ONNX Runtime unless another beats it by :data:`CHOICE_MARGIN`."""
    best = min(median_ms, key=lambda name: median_ms[name])
    ort = median_ms.get("onnxruntime")
    if ort is None or (best != "onnxruntime" and median_ms[best] < CHOICE_MARGIN * ort):
        return best
    return "onnxruntime"


def open_landmark_runner(
    runtime: str,
    models_dir: str | Path,
    providers: Sequence[str] = (CPU,),
    threads: int = 1,
    manifest: Manifest | None = None,
    name: str = "face_landmarks",
) -> tuple[ModelRunner, RuntimeTrial | None]:
    """The landmark model under ``runtime`` (``[tracking] runtime``), and the trial when it
    was ``"auto"``: every runtime available here timed on the same input, the fastest
    kept (:func:`choose_runtime`), the choice and timings logged.

    Raises ModelError for a model that is missing or fails its checks, or for
    ``"litert"`` when LiteRT or the model's ``.tflite`` is unavailable (with ``"auto"``
    such a runtime is left out and logged).
    """
    from edge.models.fetch import verified_source_path
    from edge.tracking.litert import LiteRtModel, litert_available

    manifest = manifest or load_manifest()
    spec = manifest.model(name)
    if runtime == "litert":
        return LiteRtModel(verified_source_path(name, models_dir, manifest), spec, threads), None
    ort = open_model(name, models_dir, providers, threads, manifest)
    if runtime != "auto":
        return ort, None
    runners: dict[str, ModelRunner] = {"onnxruntime": ort}
    not_tried: dict[str, str] = {}
    if not litert_available():
        not_tried["litert"] = "ai-edge-litert is not installed"
    else:
        try:
            path = verified_source_path(name, models_dir, manifest)
            runners["litert"] = LiteRtModel(path, spec, threads)
        except ModelError as exc:
            not_tried["litert"] = str(exc)
    lo, hi = spec.input.value_range
    x = np.random.default_rng(0).uniform(lo, hi, spec.input.shape).astype(np.float32)
    median_ms = time_runners(runners, x)
    trial = RuntimeTrial(choose_runtime(median_ms), median_ms, not_tried)
    log.info(
        "%s: runtime %s chosen (median ms per inference: %s)%s",
        name,
        trial.chosen,
        ", ".join(f"{k} {v:.3f}" for k, v in median_ms.items()),
        "".join(f"; {k} not tried: {why}" for k, why in not_tried.items()),
        extra={"runtime_trial": trial.as_dict()},
    )
    return runners[trial.chosen], trial

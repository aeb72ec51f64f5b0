"""Model benchmark: ONNX Runtime on the built models next to LiteRT on their sources.

LiteRT (the TFLite runtime, with its default XNNPACK delegate) is the runtime
MediaPipe itself uses, so it is the peer to beat. Both run the same weights
on the same input in the same process; cases are interleaved in rounds so
that load from other processes hits every case alike. Times are wall-clock
per ``run``/``invoke`` call including the input copy.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.models.fetch import ensure_models, extract_source, obtain_wheel
from edge.models.manifest import Manifest

ROUNDS = 10
WARMUP = 20


def ort_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session with the options that measured fastest here.

    Full graph optimisation (needed for the blocked-layout convolutions the
    rewrites are made for), sequential execution, one inter-op thread.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _litert(tflite_bytes: bytes, threads: int) -> Callable[[np.ndarray], None]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelError(
            "the benchmark needs LiteRT (ai-edge-litert)",
            "install the test extra: pip install -e '.[test]'",
        ) from None
    interp = Interpreter(model_content=tflite_bytes, num_threads=threads)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]

    def run(x: np.ndarray) -> None:
        interp.set_tensor(index, x)
        interp.invoke()

    return run


def _ort(path: Path, input_name: str, threads: int, spinning: bool) -> Callable[[np.ndarray], None]:
    session = ort_session(path, threads, spinning)

    def run(x: np.ndarray) -> None:
        session.run(None, {input_name: x})

    return run


def _stats(times_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def run_bench(
    models_dir: str | Path,
    manifest: Manifest,
    runs: int = 300,
    cache_dir: str | Path | None = None,
    threads: Sequence[int] = (1, 2),
) -> dict[str, Any]:
    """Median and p99 ms per inference for every model, runtime and thread count.

    Returns a JSON-ready dict: ``models[name][case]`` with ``median_ms`` and
    ``p99_ms`` for cases ``ort_t{n}``, ``ort_t{n}_nospin`` and ``litert_t{n}``,
    and ``ratio[name]["t{n}"]`` = ORT median / LiteRT median (best ORT variant).
    Raises ModelError when ``runs`` is below 10.
    """
    if runs < 10:
        raise ModelError(f"--runs must be at least 10, got {runs}", "pass --runs 10 or more")
    models_dir = Path(models_dir)
    paths = ensure_models(models_dir, manifest, cache_dir)
    cache = Path(cache_dir) if cache_dir is not None else models_dir.parent / "cache"
    wheel = obtain_wheel(manifest, cache, quiet=True)
    rng = np.random.default_rng(0)
    per_round = max(1, runs // ROUNDS)
    report: dict[str, Any] = {"models": {}, "ratio": {}}
    for name, spec in manifest.models.items():
        lo, hi = spec.input.value_range
        x = rng.uniform(lo, hi, spec.input.shape).astype(np.float32)
        source = extract_source(wheel, spec)
        cases: dict[str, Callable[[np.ndarray], None]] = {}
        for n in threads:
            cases[f"ort_t{n}"] = _ort(paths[name], spec.input.name, n, spinning=True)
            cases[f"ort_t{n}_nospin"] = _ort(paths[name], spec.input.name, n, spinning=False)
            cases[f"litert_t{n}"] = _litert(source, n)
        times: dict[str, list[float]] = {case: [] for case in cases}
        for fn in cases.values():
            for _ in range(WARMUP):
                fn(x)
        for _ in range(ROUNDS):
            for case, fn in cases.items():
                for _ in range(per_round):
                    start = time.perf_counter()
                    fn(x)
                    times[case].append(time.perf_counter() - start)
        stats = {case: _stats(t) for case, t in times.items()}
        report["models"][name] = stats
        report["ratio"][name] = {
            f"t{n}": round(
                min(stats[f"ort_t{n}"]["median_ms"], stats[f"ort_t{n}_nospin"]["median_ms"])
                / stats[f"litert_t{n}"]["median_ms"],
                3,
            )
            for n in threads
        }
    report["runs_per_case"] = per_round * ROUNDS
    report["machine"] = _machine()
    return report


def _machine() -> dict[str, Any]:
    import onnxruntime as ort

    try:
        from importlib.metadata import version

        litert_version = version("ai-edge-litert")
    except Exception:  # metadata missing: report what we can
        litert_version = "unknown"
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
        "ai_edge_litert": litert_version,
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` report."""
    lines = [f"{'model':<16}{'case':<18}{'median ms':>10}{'p99 ms':>10}"]
    for name, stats in report["models"].items():
        for case, s in stats.items():
            lines.append(f"{name:<16}{case:<18}{s['median_ms']:>10.3f}{s['p99_ms']:>10.3f}")
        ratios = ", ".join(f"{k}: {v:.2f}" for k, v in report["ratio"][name].items())
        lines.append(f"{name:<16}ORT/LiteRT median ratio {ratios}")
    m = report["machine"]
    lines.append(
        f"{report['runs_per_case']} runs per case; {m['cpus']} CPUs; "
        f"onnxruntime {m['onnxruntime']}, ai-edge-litert {m['ai_edge_litert']}"
    )
    return "\n".join(lines)

"""Speed of the tracking step on 640x480 RGB-D frames (``edge track --bench``).

Frames are made from a still portrait (matplotlib's public-domain
``grace_hopper.jpg`` by default): the photo, shrunk so the face is about
150 px wide as at 0.6 m from a RealSense color camera, moves a few pixels per
frame on a 640x480 canvas, with a flat depth plane at 0.6 m plus noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from edge.config import TrackingConfig
from edge.errors import SourceError
from edge.frames import Frame, Intrinsics, PixelFormat

BENCH_INTRINSICS = Intrinsics(640, 480, 615.0, 615.0, 319.5, 239.5)


def portrait_rgb(path: str | None = None) -> np.ndarray:
    """An RGB portrait: ``path``, or matplotlib's grace_hopper.jpg (512x600)."""
    if path is None:
        from matplotlib import cbook

        path = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    from edge.tracking.still import read_image

    return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def moving_portrait_frames(
    portrait: np.ndarray,
    count: int,
    scale: float = 0.75,
    shift_px_per_frame: tuple[float, float] = (0.0, 0.0),
    degrees_per_frame: float = 0.0,
    wobble_px: float = 2.0,
    depth_m: float | None = 0.6,
    fps: float = 30.0,
    seed: int = 0,
) -> Iterator[Frame]:
    """640x480 frames of ``portrait`` moving on a grey canvas, with optional flat noisy depth.

    Frame i shows the portrait scaled by ``scale``, rotated by
    ``i * degrees_per_frame`` about its centre and shifted by
    ``i * shift_px_per_frame`` plus a small sinusoidal wobble.
    """
    rng = np.random.default_rng(seed)
    h, w = portrait.shape[:2]
    k = BENCH_INTRINSICS
    for i in range(count):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), i * degrees_per_frame, scale)
        m[0, 2] += (k.width - w) / 2 + i * shift_px_per_frame[0] + wobble_px * np.sin(i / 3)
        m[1, 2] += (k.height - h) / 2 + i * shift_px_per_frame[1]
        color = cv2.warpAffine(
            portrait, m, (k.width, k.height), borderMode=cv2.BORDER_CONSTANT, borderValue=(90,) * 3
        )
        depth = None
        if depth_m is not None:
            noise = rng.normal(0.0, 0.002, (k.height, k.width))
            depth = np.round((depth_m + noise) / 0.001).astype(np.uint16)
        yield Frame(
            number=i,
            color=color,
            color_format=PixelFormat.RGB8,
            depth=depth,
            depth_scale_m=0.001,
            intrinsics=k,
            device_timestamp_ms=1000.0 * i / fps,
        )


class _Timed:
    """A model runner that records how long each run took (milliseconds)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self.ms: list[float] = []

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        out = self.inner.run(x)
        self.ms.append((time.perf_counter() - start) * 1000.0)
        return list(out)


def _stats(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0, "median_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def run_bench(
    config: TrackingConfig,
    image_path: str | None = None,
    frames: int = 300,
    threads: tuple[int, ...] = (1, 2),
) -> list[dict[str, Any]]:
    """Per thread count: median and p99 ms of the detector, the landmark model and ``track()``.

    The whole step includes preprocessing, decoding, depth lifting and
    smoothing; a detector cross-check runs every ``redetect_interval_frames``.
    """
    from edge.tracking.tracker import FaceTracker

    if frames < 10:
        raise SourceError(f"--frames must be at least 10, got {frames}", "pass --frames 10 or more")
    portrait = portrait_rgb(image_path)
    clip = list(moving_portrait_frames(portrait, frames))
    results = []
    for n in threads:
        cfg = replace(config, intra_op_threads=n)
        tracker = FaceTracker.from_config(cfg)
        det, lm = _Timed(tracker.detector.model), _Timed(tracker.landmarks.model)
        tracker.detector.model, tracker.landmarks.model = det, lm
        for frame in clip[:5]:  # warm-up: first runs allocate
            tracker.track(frame)
        tracker.reset()
        det.ms.clear()
        lm.ms.clear()
        step_ms, cpu_ms, found = [], [], 0
        for frame in clip:
            start, cpu_start = time.perf_counter(), time.process_time()
            result = tracker.track(frame)
            step_ms.append((time.perf_counter() - start) * 1000.0)
            cpu_ms.append((time.process_time() - cpu_start) * 1000.0)
            found += result.patient is not None
        results.append(
            {
                "threads": n,
                "provider": tracker.detector.model.inner.provider,
                "frames": len(clip),
                "frames_with_face": found,
                "detector": _stats(det.ms),
                "landmarks": _stats(lm.ms),
                "tracking_step": _stats(step_ms),
                # CPU time of the whole process (all threads) per step: what the step costs,
                # less sensitive than wall time to other programs competing for the cores.
                "tracking_step_cpu": _stats(cpu_ms),
            }
        )
        tracker.close()
    return results


def format_bench(results: list[dict[str, Any]]) -> str:
    keys = ("detector", "landmarks", "tracking_step", "tracking_step_cpu")
    heads = ("detector", "landmarks", "tracking step", "step CPU time")
    lines = [
        "640x480 frames; wall milliseconds (median / p99), n = calls; CPU time of the process",
        f"{'threads':>7}  " + "  ".join(f"{h:>21}" for h in heads) + "  faces",
    ]
    for r in results:
        cells = [f"{r[k]['median_ms']:6.2f} / {r[k]['p99_ms']:6.2f} n={r[k]['n']:<4}" for k in keys]
        lines.append(
            f"{r['threads']:>7}  "
            + "  ".join(f"{c:>21}" for c in cells)
            + f"  {r['frames_with_face']}/{r['frames']} ({r['provider']})"
        )
    return "\n".join(lines)

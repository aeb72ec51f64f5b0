"""The landmark model's runtime: LiteRT agrees with ONNX Runtime, ``[tracking] runtime``
picks one, and ``"auto"`` times both at start and keeps the faster (ORT on a tie)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from edge.config import TrackingConfig, parse_config
from edge.errors import ConfigError, ModelError
from edge.models import load_manifest
from edge.models.fetch import source_file
from edge.tracking.bench import moving_portrait_frames, portrait_rgb
from edge.tracking.landmarks import LandmarkModel, roi_from_landmarks
from edge.tracking.litert import PROVIDER, LiteRtModel
from edge.tracking.runtime import choose_runtime, open_landmark_runner, time_runners
from edge.tracking.tracker import FaceTracker

AGREEMENT_PX = 0.05


def test_onnx_runtime_stays_unless_another_is_clearly_faster():
    assert choose_runtime({"onnxruntime": 1.00, "litert": 0.97}) == "onnxruntime"
    assert choose_runtime({"onnxruntime": 1.00, "litert": 0.90}) == "litert"
    assert choose_runtime({"onnxruntime": 0.80, "litert": 0.90}) == "onnxruntime"
    assert choose_runtime({"litert": 0.9}) == "litert"


def test_runners_are_timed_on_the_same_input_in_turns():
    seen: list[tuple[str, int]] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, x: np.ndarray) -> list[np.ndarray]:
            seen.append((self.name, id(x)))
            return [x]

    x = np.zeros((1, 2, 2, 3), np.float32)
    medians = time_runners({"a": Fake("a"), "b": Fake("b")}, x, rounds=3, runs=2, warmup=1)
    assert set(medians) == {"a", "b"} and all(m >= 0 for m in medians.values())
    assert {i for _, i in seen} == {id(x)}
    timed = [name for name, _ in seen[2:]]
    assert timed == ["a", "a", "b", "b"] * 3  # rounds alternate between the runtimes


def test_litert_gives_the_same_landmarks_as_onnx_runtime(models_dir):
    manifest = load_manifest()
    ort, _ = open_landmark_runner("onnxruntime", models_dir, manifest=manifest)
    lite, _ = open_landmark_runner("litert", models_dir, manifest=manifest)
    assert isinstance(lite, LiteRtModel) and lite.provider == PROVIDER
    tracker = FaceTracker.from_config(TrackingConfig(models_dir=str(models_dir)))
    frames = list(moving_portrait_frames(portrait_rgb(), 6, degrees_per_frame=3.0))
    worst = 0.0
    for frame in frames:
        face = tracker.track(frame).patient
        assert face is not None
        roi = roi_from_landmarks(face.landmarks_px, tracker.config.roi_scale)
        a = LandmarkModel(ort).run(frame.color, roi)
        b = LandmarkModel(lite).run(frame.color, roi)
        worst = max(worst, float(np.abs(a.landmarks_px[:, :2] - b.landmarks_px[:, :2]).max()))
        assert abs(a.presence - b.presence) < 1e-3
    assert worst <= AGREEMENT_PX, f"LiteRT and ORT landmarks differ by up to {worst:.4f} px"


def test_the_config_key_chooses_the_runtime(models_dir):
    config, _ = parse_config({"tracking": {"models_dir": str(models_dir), "runtime": "litert"}})
    tracker = FaceTracker.from_config(config.tracking)
    assert tracker.providers["face_landmarks"] == PROVIDER and tracker.runtime_trial is None
    with pytest.raises(ConfigError, match=r"tracking\.runtime' must be one of"):
        parse_config({"tracking": {"runtime": "tensorflow"}}, "x")


def test_auto_times_both_runtimes_and_keeps_the_faster(models_dir, caplog):
    config = TrackingConfig(models_dir=str(models_dir), runtime="auto")
    with caplog.at_level("INFO", logger="edge.tracking.runtime"):
        tracker = FaceTracker.from_config(config)
    trial = tracker.runtime_trial
    assert trial is not None and set(trial.median_ms) == {"onnxruntime", "litert"}
    assert trial.chosen == choose_runtime(trial.median_ms)
    want = PROVIDER if trial.chosen == "litert" else "CPUExecutionProvider"
    assert tracker.providers["face_landmarks"] == want
    assert any(getattr(r, "runtime_trial", None) == trial.as_dict() for r in caplog.records)


def test_a_missing_tflite_is_refused_for_litert_and_left_out_by_auto(models_dir, tmp_path):
    manifest = load_manifest()
    for spec in manifest.models.values():  # the ONNX files only
        shutil.copy(models_dir / spec.file, tmp_path / spec.file)
    with pytest.raises(ModelError, match=r"face_landmark.tflite is missing.*edge models fetch"):
        open_landmark_runner("litert", tmp_path, manifest=manifest)
    runner, trial = open_landmark_runner("auto", tmp_path, manifest=manifest)
    assert trial is not None and trial.chosen == "onnxruntime"
    assert getattr(runner, "provider", "") == "CPUExecutionProvider"
    assert set(trial.median_ms) == {"onnxruntime"} and "litert" in trial.not_tried
    assert source_file(manifest.model("face_landmarks")) in trial.not_tried["litert"]
    assert dataclasses.asdict(trial)["chosen"] == "onnxruntime"

"""Phantom inputs: bad photos, scenarios, motion files and frame counts; the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.cli import main
from edge.config import PhantomConfig, TrackingConfig
from edge.errors import SourceError
from edge.models import ensure_models
from edge.models.manifest import repo_models_dir
from edge.sources.phantom import PhantomSource, tracker_landmarks
from edge.sources.phantom.face import load_face_model
from edge.sources.phantom.motion import load_motion, pose_matrix

HEADER = "frame,tx_m,ty_m,tz_m,rx_deg,ry_deg,rz_deg\n"


def _never() -> None:
    raise AssertionError("the landmark detector must not be needed here")


def test_unreadable_face_image(tmp_path):
    with pytest.raises(SourceError, match="cannot read face image"):
        load_face_model(tmp_path / "missing.jpg", _never, None)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(SourceError, match="not a readable image"):
        load_face_model(junk, _never, None)


def test_photo_with_no_face(tmp_path):
    import cv2

    models = repo_models_dir() / "build"
    ensure_models(models)
    photo = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photo), (rng.random((300, 300, 3)) * 60 + 100).astype(np.uint8))
    with pytest.raises(SourceError, match=r"no face found in .*frontal face photograph"):
        load_face_model(
            photo, lambda: tracker_landmarks(TrackingConfig(models_dir=str(models))), None
        )


def test_unknown_scenario_lists_the_valid_ones():
    with pytest.raises(
        SourceError, match=r"unknown phantom scenario .wobble.*nod-shake.*photo-spoof"
    ):
        PhantomSource("wobble", frames=3)


@pytest.mark.parametrize("frames", [0, -4])
def test_frame_count_must_be_positive(frames):
    with pytest.raises(SourceError, match="frame count must be at least 1"):
        PhantomSource("static", frames=frames)


@pytest.mark.parametrize(
    "text, where, field",
    [
        ("frame,x,y\n0,1,2\n", "line 1", "header"),
        (HEADER + "0,0,0,0.5,0,0,0\n1,0,0,0.5,0,abc,0\n", "line 3", "ry_deg"),
        (HEADER + "0,0,0,0.5,0,0,0\n2,0,0,0.5,0,0,0\n", "line 3", "frame"),
        (HEADER + "0,0,0,0.5,0,0\n", "line 2", "rz_deg"),
        (HEADER + "0,0,0,-0.5,0,0,0\n", "line 2", "tz_m"),
        (HEADER + "0,0,nan,0.5,0,0,0\n", "line 2", "ty_m"),
    ],
)
def test_malformed_csv_motion_names_line_and_field(tmp_path, text, where, field):
    path = tmp_path / "motion.csv"
    path.write_text(text)
    with pytest.raises(SourceError, match=f"{where}, field '{field}'"):
        load_motion(path)


@pytest.mark.parametrize(
    "data, where, field",
    [
        ({"poses": [{"frame": 0, "t_m": [0, 0, 0.5]}]}, "pose 0", "r_deg"),
        ({"poses": [{"frame": 0, "t_m": [0, 0], "r_deg": [0, 0, 0]}]}, "pose 0", "t_m"),
        ({"poses": "none"}, "top level", "poses"),
    ],
)
def test_malformed_json_motion_names_pose_and_field(tmp_path, data, where, field):
    path = tmp_path / "motion.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SourceError, match=f"{where}, field '{field}'"):
        load_motion(path)


def test_motion_file_drives_the_poses(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "0,0.01,0,0.6,5,-10,2\n1,0.02,0,0.62,0,20,0\n")
    poses = load_motion(path)
    assert np.allclose(poses[1], pose_matrix((0.02, 0, 0.62), (0, 20, 0)))
    src = PhantomSource("nod-shake", frames=4, motion=path, config=PhantomConfig(cache_dir=""))
    assert src.scenario.name == "motion"
    got = src.poses()
    assert np.allclose(got[0], poses[0]) and np.allclose(got[3], poses[1])  # last pose held
    R = pose_matrix((0, 0, 1), (0, 90, 0))[:3, :3]
    assert np.allclose(R @ [1, 0, 0], [0, 0, -1])  # yaw turns the subject's left towards the camera


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["phantom", "--scenario", "wobble", "--plan-out", str(tmp_path / "p")]) == 2
    assert "unknown phantom scenario" in capsys.readouterr().err
    assert main(["phantom", "--frames", "0", "--out", str(tmp_path / "x.db3")]) == 2
    assert "frame count" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("frame\n")
    assert main(["phantom", "--motion", str(bad), "--plan-out", str(tmp_path / "p")]) == 2
    assert "line 1, field 'header'" in capsys.readouterr().err


def test_cli_writes_recording_truth_and_plan(tmp_path):
    from edge.sources.recording import RecordingSource, load_truth

    models = repo_models_dir() / "build"
    ensure_models(models)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[tracking]\nmodels_dir = "{models.as_posix()}"\n'
        f'[phantom]\ncache_dir = "{(tmp_path / "cache").as_posix()}"\n'
    )
    out = tmp_path / "p.db3"
    args = ["phantom", "--scenario", "static", "--frames", "3", "--out", str(out), "--seed", "2"]
    code = main([*args, "--plan-out", str(tmp_path / "plan"), "--config", str(cfg)])
    assert code == 0
    truth = load_truth(out)
    assert sorted(truth) == [0, 1, 2] and truth[0].scenario == "static"
    assert (tmp_path / "plan" / "plan.json").is_file()
    with RecordingSource(out) as rec:
        frame = rec.read()
    assert frame is not None and frame.depth is not None
    assert np.allclose(truth[0].patient_to_camera, frame.truth.patient_to_camera)


def test_the_phantom_finds_its_face_with_the_configured_models(tmp_path):
    """Outside the checkout the tracker's models come from the configuration, not ./models."""
    from edge.config import EdgeConfig, with_overrides
    from edge.errors import ModelError
    from edge.sources import open_source, parse_source_spec

    cfg = EdgeConfig()
    cfg = with_overrides(cfg, tracking=with_overrides(cfg.tracking, models_dir=str(tmp_path)))
    source = open_source(parse_source_spec("phantom"), cfg)
    assert source.frame_count == 300  # the scenario's default length
    with pytest.raises(ModelError, match=str(tmp_path)):
        source._make_detector()  # what a face-cache miss calls

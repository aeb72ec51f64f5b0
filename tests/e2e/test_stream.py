"""End to end over real sockets: `edge run` streams the phantom, `edge view` clients draw it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge import geometry
from edge.app import RunOptions, execute
from edge.config import EdgeConfig
from edge.plan.load import read_plan
from support.net import free_endpoint


def _start_edge(repo: Path, frames: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    pub = free_endpoint()
    svc = free_endpoint()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge",
            "run",
            "--frames",
            str(frames),
            "--source",
            "phantom:nod-shake",
            "--publish",
            pub,
            "--service",
            svc,
            "-q",
        ],
        cwd=repo,
        env={**os.environ, "EDGE_CONFIG": os.devnull},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    # Wait for the publisher to be bound and the models loaded before starting viewers.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log_path.read_text()
        bound = text.find("streaming on")
        # The tracker's models load after the sockets are bound (a first run also
        # loads them earlier, to build the phantom's face).
        if bound >= 0 and "face_landmarks: running on" in text[bound:]:
            return proc, pub
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"edge run did not start streaming: {log_path.read_text()[-2000:]}")


@pytest.mark.parametrize("viewers", [1, 3])
def test_edge_run_streams_to_view_clients(repo_root, tmp_path, viewers):
    edge, pub = _start_edge(repo_root, frames=400, log_path=tmp_path / "edge.log")
    try:
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge",
                    "view",
                    "--connect",
                    pub,
                    "--keys",
                    str(repo_root / "out" / "demo" / "keys"),
                    "--out",
                    str(tmp_path / f"view{i}.mp4"),
                    "--frames",
                    "150",
                    "--duration",
                    "120",
                    "--stale-ms",
                    "500",
                ],
                cwd=repo_root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(viewers)
        ]
        for i, c in enumerate(clients):
            _, err = c.communicate(timeout=180)
            assert c.returncode == 0, err[-2000:]
            drawn = int(re.search(r"drawn (\d+)", err).group(1))
            assert drawn >= 1, err
            assert (tmp_path / f"view{i}.mp4").stat().st_size > 5_000
    finally:
        edge.terminate()
        out, _ = edge.communicate(timeout=60)
    assert edge.returncode == 0, (tmp_path / "edge.log").read_text()[-2000:]
    assert "edge run:" in out


def test_overlay_targets_sit_on_the_phantom(tmp_path):
    """The targets the overlay draws land where the true targets project (pixels)."""
    seen = []

    def keep(result) -> None:
        ov, truth = result.overlay, result.frame.truth
        if ov is not None and ov.current and truth is not None and truth.face_visible:
            seen.append(
                (ov.target_names, ov.targets_px, truth.patient_to_camera, result.frame.intrinsics)
            )

    execute(RunOptions(config=EdgeConfig(), frames=30, publish="off", workdir=tmp_path), keep)
    plan = read_plan(tmp_path / "plan")  # the phantom's plan, written by the run
    errors = []
    for names, px, patient_to_camera, intrinsics in seen:
        true_px = intrinsics.project(
            geometry.apply(patient_to_camera, np.array([plan.targets[n] for n in names]))
        )
        errors.extend(np.linalg.norm(px - true_px, axis=1).tolist())
    assert len(seen) > 20
    assert float(np.median(errors)) < 1.5
    assert float(np.max(errors)) < 4.0

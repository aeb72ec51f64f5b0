"""The README's quickstart and viewer commands, extracted from README.md and run as written.

`scripts/dev.sh run` (set-up, then the phantom demo streaming on tcp://127.0.0.1:5555)
runs with the viewer command beside it, as the README tells a new user to do. The
other quickstart command, `scripts/dev.sh test`, is the command running this suite
(and what .ci/run calls), so it is checked for being there, not run again; nor is
`scripts/dev.sh lock`, which rewrites uv.lock from the registry.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import cv2
import pytest


def _section(readme: str, heading: str) -> str:
    start = readme.index(f"\n## {heading}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else len(readme)]


def _shell_commands(text: str) -> list[str]:
    """Each line of each ```sh block, without its comment."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def quickstart(repo_root: Path) -> list[str]:
    return _shell_commands(_section((repo_root / "README.md").read_text(), "Quickstart"))


def test_the_test_command_is_the_one_ci_runs(quickstart, repo_root: Path) -> None:
    assert "scripts/dev.sh test" in quickstart
    assert "exec scripts/dev.sh test" in (repo_root / ".ci" / "run").read_text()


@pytest.mark.slow
def test_quickstart_demo_and_viewer_run_as_written(quickstart, repo_root: Path) -> None:
    run_cmd = next(c for c in quickstart if c.startswith("scripts/dev.sh run"))
    view_cmd = next(c for c in quickstart if " view " in f" {c} ")
    view = shlex.split(view_cmd)
    mp4 = repo_root / view[view.index("--out") + 1]
    mp4.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    log_path = repo_root / "out" / "readme-test-run.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        edge = subprocess.Popen(
            shlex.split(run_cmd), cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    viewer = None
    try:
        deadline = time.monotonic() + 600
        while "streaming on" not in log_path.read_text() and time.monotonic() < deadline:
            assert edge.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        viewer = subprocess.run(
            view, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
        )
        assert edge.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    finally:
        if edge.poll() is None:
            edge.kill()
    out = log_path.read_text()
    assert "target registration error" in out and "Traceback" not in out
    assert viewer.returncode == 0, viewer.stderr[-3000:]
    # The viewer heard the demo and wrote its view until the edge went quiet.
    cap = cv2.VideoCapture(str(mp4))
    try:
        assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0
    finally:
        cap.release()
    received = re.search(r"received (\d+)", viewer.stderr)
    assert received is not None and int(received.group(1)) > 0, viewer.stderr
    mp4.unlink()

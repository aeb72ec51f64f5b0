"""`edge calibrate pivot --source ... --tool ...`: the tip from frames of the tool pivoting."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.calibration.results import load_result
from edge.cli import main
from edge.tools.definition import load_tool


def test_pivot_from_a_phantom_recording_writes_the_tip_into_the_tool_file(
    repo_root, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(repo_root)
    recording = tmp_path / "pivot.db3"
    assert (
        main(["phantom", "--scenario", "tool-pivot", "--frames", "60", "--out", str(recording)])
        == 0
    )
    tool = tmp_path / "guide.toml"
    shutil.copy(repo_root / "hardware/tools/needle-guide.toml", tool)
    text = tool.read_text().replace("tip_mm = [0.0000, 0.0000, 120.0000]", "tip_mm = [0, 0, 95]")
    tool.write_text(text)
    assert load_tool(str(tool)).tip_m == pytest.approx([0, 0, 0.095])
    capsys.readouterr()
    devices = tmp_path / "devices"
    args = ["calibrate", "pivot", "--source", str(recording), "--tool", str(tool)]
    assert main([*args, "--devices-dir", str(devices)]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "tip moved" in out
    spec = load_tool(str(tool))
    # The phantom's guide has its tip 120 mm along its axis: recovered within 0.5 mm.
    assert np.linalg.norm(spec.tip_m - [0.0, 0.0, 0.120]) < 0.0005
    assert 0.0 < spec.tip_rms_mm < 1.0 and spec.tip_source.startswith("pivot calibration")
    assert tool.read_text().startswith("# A needle/drill guide")  # its comments are kept
    result = load_result(devices / "needle-guide" / "pivot.json")
    assert result.inputs[0]["role"] == "recording" and result.inputs[0]["sha256"]


def test_pivot_source_needs_a_tool_and_a_tool_in_view(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert main(["calibrate", "pivot", "--source", "phantom:static", "--frames", "3"]) == 2
    assert "pass --tool NAME" in capsys.readouterr().err
    code = main(
        ["calibrate", "pivot", "--source", "phantom:static", "--tool", "pointer", "--frames", "3",
         "--devices-dir", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "seen in only 0 frames" in err and len(err.splitlines()) == 1

"""Result files, the loader the edge process uses, board files, `edge calibrate` commands."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from edge import __version__
from edge.calibration.boards import load_board, render_board_file
from edge.calibration.results import (
    CalibrationResult,
    find_calibration,
    load_result,
    save_result,
)
from edge.cli import main
from edge.errors import CalibrationError


def make_result(serial: str = "123456", w: int = 640, h: int = 480, **kw) -> CalibrationResult:
    return CalibrationResult(
        kind="intrinsics",
        serial=serial,
        width=w,
        height=h,
        parameters={"fx": 612.0, "fy": 611.0, "cx": 322.5, "cy": 236.8},
        errors={"rms_px": 0.12},
        inputs=[{"path": "views.json", "role": "detected corners", "sha256": "ab" * 32}],
        **kw,
    )


def test_round_trip(tmp_path) -> None:
    result = make_result()
    path = save_result(result, tmp_path)
    assert path == tmp_path / "123456" / "intrinsics-640x480.json"
    loaded = load_result(path)
    assert loaded.to_dict() == result.to_dict()
    assert loaded.software_version == __version__
    assert json.loads(path.read_text())["schema"] == "edge.calibration/1"


def test_previous_result_moves_to_history(tmp_path) -> None:
    save_result(make_result(created_utc="2026-01-02T03:04:05+00:00"), tmp_path)
    save_result(make_result(), tmp_path)
    history = list((tmp_path / "123456" / "history").iterdir())
    assert [p.name for p in history] == ["intrinsics-640x480.20260102T030405Z.json"]


def test_loader_picks_matching_serial_and_resolution(tmp_path) -> None:
    save_result(make_result("AAA", 640, 480), tmp_path)
    save_result(make_result("AAA", 1280, 720), tmp_path)
    save_result(make_result("BBB", 640, 480), tmp_path)
    found = find_calibration("AAA", 1280, 720, "intrinsics", tmp_path)
    assert found.warning is None
    assert found.path == tmp_path / "AAA" / "intrinsics-1280x720.json"
    assert found.result is not None and found.result.width == 1280
    assert str(found.path) in found.message


def test_loader_warns_on_other_resolution_and_unknown_device(tmp_path) -> None:
    save_result(make_result("AAA", 640, 480), tmp_path)
    other = find_calibration("AAA", 848, 480, "intrinsics", tmp_path)
    assert other.result is None
    assert "intrinsics-640x480.json, not 848x480" in (other.warning or "")
    missing = find_calibration("ZZZ", 640, 480, "intrinsics", tmp_path)
    assert missing.result is None and "no intrinsics calibration for device ZZZ" in missing.warning


def test_loader_warns_when_stale(tmp_path) -> None:
    save_result(make_result(created_utc="2026-01-01T00:00:00+00:00"), tmp_path)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    found = find_calibration("123456", 640, 480, "intrinsics", tmp_path, 90.0, now)
    assert found.result is not None  # still used, but the HUD says so
    assert "151 days old (limit 90)" in (found.warning or "")
    fresh = find_calibration("123456", 640, 480, "intrinsics", tmp_path, 365.0, now)
    assert fresh.warning is None


def test_loader_warns_on_corrupt_or_foreign_file(tmp_path) -> None:
    folder = tmp_path / "123456"
    folder.mkdir()
    (folder / "intrinsics-640x480.json").write_text("{not json")
    bad = find_calibration("123456", 640, 480, "intrinsics", tmp_path)
    assert bad.result is None and "unreadable" in (bad.warning or "")
    # A file copied from another camera is not used.
    data = make_result("999").to_dict()
    (folder / "intrinsics-640x480.json").write_text(json.dumps(data))
    foreign = find_calibration("123456", 640, 480, "intrinsics", tmp_path)
    assert foreign.result is None and "calibration of 999" in (foreign.warning or "")


def test_wrong_files_refused(tmp_path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(CalibrationError, match="not a calibration result"):
        load_result(tmp_path / "x.json")
    with pytest.raises(CalibrationError, match="does not exist"):
        load_result(tmp_path / "missing.json")
    with pytest.raises(CalibrationError, match="cannot name a folder"):
        make_result("../etc")


def test_board_files(repo_root, tmp_path) -> None:
    boards = repo_root / "calibration" / "boards"
    spec = load_board("a4-charuco-7x5", boards)
    assert (spec.squares_x, spec.squares_y, spec.square_mm) == (7, 5, 35.0)
    with pytest.raises(CalibrationError, match="known boards: a3-charuco-11x8, a4-charuco-7x5"):
        load_board("nope", boards)
    (tmp_path / "bad.toml").write_text(
        "squares_x = 5\nsquares_y = 4\nsquare_mm = 20\nmarker_mm = 25\n"
    )
    with pytest.raises(CalibrationError, match="smaller than square_mm"):
        load_board(str(tmp_path / "bad.toml"), boards)
    (tmp_path / "typo.toml").write_text("squares_x = 5\nsquares_y = 4\nsquare = 20\n")
    with pytest.raises(CalibrationError, match="unknown key"):
        load_board(str(tmp_path / "typo.toml"), boards)


def test_board_png_is_true_scale(repo_root, tmp_path) -> None:
    from PIL import Image

    spec = load_board("a4-charuco-7x5", repo_root / "calibration" / "boards")
    png = render_board_file(spec, tmp_path / "board.png", dpi=100)
    with Image.open(png) as im:
        assert im.size == (1169, 827) or im.size == (1169, 826)  # A4 at 100 dpi
        assert im.info["dpi"][0] == pytest.approx(100, abs=0.01)
    pdf = render_board_file(spec, tmp_path / "board.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    box = re.search(rb"MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf.read_bytes())
    assert box is not None  # A4 landscape, in points (1/72 inch)
    assert float(box[1]) == pytest.approx(297 / 25.4 * 72, abs=0.01)
    assert float(box[2]) == pytest.approx(210 / 25.4 * 72, abs=0.01)
    with pytest.raises(CalibrationError, match=r"use a \.png or \.pdf"):
        render_board_file(spec, tmp_path / "board.svg")


@pytest.mark.parametrize(
    ("procedure", "extra", "result_name"),
    [
        ("handeye", [], "synthetic/handeye-640x480.json"),
        ("spaam", [], "synthetic-hmd/spaam-1280x720.json"),
        ("pivot", ["--ransac"], "synthetic-pointer/pivot.json"),
    ],
)
def test_cli_pose_procedures(tmp_path, capsys, procedure, extra, result_name) -> None:
    code = main(["calibrate", procedure, "--synthetic", "--devices-dir", str(tmp_path), *extra])
    assert code == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "vs truth" in out
    result = load_result(tmp_path / result_name)
    assert result.inputs[0]["sha256"] and (tmp_path / result_name).with_suffix(".png").exists()


def test_cli_intrinsics_and_depth_check(repo_root, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    args = ["--synthetic", "--board", "a4-charuco-7x5", "--devices-dir", str(tmp_path)]
    assert main(["calibrate", "intrinsics", *args, "--frames", "20", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "vs truth: fx" in out
    result = load_result(tmp_path / "synthetic" / "intrinsics-640x480.json")
    assert result.parameters["fx"] == pytest.approx(612.0, rel=0.005)
    assert any(i["role"] == "detected corners" and i["sha256"] for i in result.inputs)
    # The depth check uses the intrinsics just stored, and flags a 2 % scale error.
    code = main(["calibrate", "depth-check", *args, "--synthetic-scale-error-pct", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "using intrinsics calibration" in out and "ON-CHIP" in out


def test_cli_refusal_is_one_line_exit_2(repo_root, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    code = main(
        [
            "calibrate",
            "intrinsics",
            "--synthetic",
            "--board",
            "a4-charuco-7x5",
            "--frames",
            "3",
            "--devices-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too few views" in err[0]
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["calibrate", "pivot", "--input", str(bad), "--devices-dir", str(tmp_path)]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err

"""`edge calibrate intrinsics --images DIR` and the calibration commands run from any folder:
board photos rendered from the synthetic camera and saved as PNG files, a refused
collection's report, printable boards readable by others, a recording's serial."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edge.calibration.boards import BUILTIN_BOARDS, load_board
from edge.calibration.results import load_result
from edge.calibration.synthetic import SyntheticBoardSource, TrueCamera
from edge.cli import main

BOARD = "a4-charuco-7x5"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """20 views of the board through the synthetic camera, as PNG files."""
    import cv2

    folder = Path(tmp_path_factory.mktemp("photos"))
    with SyntheticBoardSource(load_board(BOARD, ""), frames=20, seed=2) as src:
        for frame in src:
            assert cv2.imwrite(str(folder / f"view-{frame.number:03d}.png"), frame.bgr())
    return folder


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working folder outside the checkout: boards must still be found."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_intrinsics_from_an_image_folder_recover_the_focal_length(photos, elsewhere, capsys):
    devices = elsewhere / "devices"
    args = ["calibrate", "intrinsics", "--images", str(photos), "--board", BOARD]
    code, out, _ = run(capsys, *args, "--devices-dir", str(devices), "--serial", "CAM-7")
    assert code == 0, out
    assert "VERDICT: PASS" in out and "vs factory" not in out
    result = load_result(devices / "CAM-7" / "intrinsics-640x480.json")
    cam = TrueCamera()
    assert result.parameters["fx"] == pytest.approx(cam.fx, rel=0.005)
    assert result.parameters["fy"] == pytest.approx(cam.fy, rel=0.005)
    assert sum(i["role"] == "image" for i in result.inputs) == 20
    # Without a serial the result is filed under 'unknown', and the command says so.
    code, out, _ = run(capsys, *args, "--devices-dir", str(devices), "--width", "640",
                       "--height", "480")  # fmt: skip
    assert code == 0 and "'unknown'" in out
    assert (devices / "unknown" / "intrinsics-640x480.json").is_file()


def test_image_folder_refusals_are_one_line_and_write_a_report(photos, elsewhere, capsys):
    import shutil

    few = elsewhere / "few"
    few.mkdir()
    for p in sorted(photos.glob("*.png"))[:3]:
        shutil.copy(p, few / p.name)
    devices = elsewhere / "devices"
    base = ["calibrate", "intrinsics", "--board", BOARD, "--devices-dir", str(devices)]
    code, _, err = run(capsys, *base, "--images", str(few))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "too few views" in lines[0]
    report = devices / "unknown" / "intrinsics-640x480.png"
    assert report.stat().st_size > 10_000 and str(report) in lines[0]
    for extra, needle in (
        (["--images", str(photos), "--width", "1280", "--height", "720"], "not 1280x720"),
        (["--images", str(photos), "--width", "640"], "--width and --height"),
        (["--images", str(elsewhere / "none")], "does not exist"),
        (["--images", str(elsewhere)], "no images"),
    ):
        code, _, err = run(capsys, *base, *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_boards_are_found_anywhere_and_printed_readable(elsewhere, capsys):
    assert (BUILTIN_BOARDS / f"{BOARD}.toml").is_file()
    code, _, _ = run(capsys, "calibrate", "board", BOARD, "--out", "board.png")
    assert code == 0
    assert stat.S_IMODE((elsewhere / "board.png").stat().st_mode) == 0o644
    # A board file in calibration.boards_dir (here the default, relative) wins over the
    # built-in one of the same name.
    local = elsewhere / "calibration" / "boards"
    local.mkdir(parents=True)
    text = (BUILTIN_BOARDS / f"{BOARD}.toml").read_text()
    (local / f"{BOARD}.toml").write_text(text.replace("square_mm = 35.0", "square_mm = 34.5"))
    assert load_board(BOARD, "calibration/boards").square_mm == 34.5
    code, _, err = run(capsys, "calibrate", "board", "no-such-board", "--out", "b.png")
    assert code == 2 and "a3-charuco-11x8" in err and BOARD in err


def test_a_recording_names_its_device_so_no_serial_is_needed(tmp_path, capsys):
    from edge.sources.record import record_frames

    rec = tmp_path / "board.db3"
    source = SyntheticBoardSource(load_board(BOARD, ""), frames=3, seed=1)
    assert record_frames(source, rec, 3).frames == 3
    code, _, err = run(
        capsys, "calibrate", "intrinsics", "--source", str(rec), "--board", BOARD,
        "--devices-dir", str(tmp_path / "devices"),
    )  # fmt: skip
    # Three views are too few to solve, but the serial came from the recording.
    assert code == 2 and "too few views" in err and "--serial" not in err
    assert (tmp_path / "devices" / "synthetic" / "intrinsics-640x480.png").is_file()
    info = json.loads(run(capsys, "info", str(rec), "--json")[1])
    assert info["camera"]["serial"] == "synthetic"

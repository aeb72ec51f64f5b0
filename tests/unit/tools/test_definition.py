"""Tool definition files (hardware/tools/) and `edge tools print|list` through the CLI."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from edge.cli import main
from edge.errors import ToolError
from edge.tools.definition import load_tool, load_tools, write_tip


def test_shipped_tools_load(repo_root) -> None:
    guide, pointer = load_tools(("needle-guide", "pointer"), repo_root / "hardware" / "tools")
    assert guide.dictionary == pointer.dictionary == "DICT_4X4_50"
    assert len(guide.markers) == 5 and len(pointer.markers) == 3
    assert guide.marker(0).size_m == pytest.approx(0.030)
    assert guide.marker(1).size_m == pytest.approx(0.025)
    # The guide's faces point different ways (a rigid body seen from several sides).
    normals = np.array([m.normal for m in guide.markers])
    assert len({tuple(n.round(3)) for n in normals}) == 5
    assert guide.tip_m == pytest.approx([0.0, 0.0, 0.120])
    assert np.linalg.norm(guide.axis) == pytest.approx(1.0)


def _write(tmp_path, text: str):
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


GOOD = """name = "t"
dictionary = "DICT_4X4_50"
axis = [0, 0, 1]
tip_mm = [0, 0, 100]
[[markers]]
id = 3
corners_mm = [[-10, -10, 0], [10, -10, 0], [10, 10, 0], [-10, 10, 0]]
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("DICT_4X4_50", "DICT_9X9"), "unknown marker dictionary"),
        (("id = 3", "id = 77"), "marker id 77 is not in DICT_4X4_50"),
        (("[10, 10, 0]", "[10, 14, 0]"), "corners are not a square"),
        (
            (
                "[-10, -10, 0], [10, -10, 0], [10, 10, 0], [-10, 10, 0]",
                "[0,0,0],[1,0,0],[1,1,0],[0,1,0]",
            ),
            "1.0 mm wide",
        ),
        (("axis = [0, 0, 1]", "axis = [0, 0, 0]"), "axis is zero"),
        (("tip_mm = [0, 0, 100]", "tip_mm = [0, 0, 900]"), "tip_mm is more than"),
        (("id = 3", "idx = 3"), "unknown key 'markers"),
        (("tip_mm = [0, 0, 100]", 'tip_mm = "far"'), "tip_mm"),
    ],
)
def test_bad_tool_files_are_refused_with_the_key(tmp_path, change, message) -> None:
    assert load_tool(str(_write(tmp_path, GOOD))).marker_ids == [3]
    with pytest.raises(ToolError, match=re.escape(message)):
        load_tool(str(_write(tmp_path, GOOD.replace(*change))))


def test_shared_marker_ids_are_refused(tmp_path, repo_root) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD.replace('name = "t"', 'name = "u"'))
    with pytest.raises(ToolError, match="both use marker 3"):
        load_tools(("a", "b"), tmp_path)


def test_write_tip_round_trips(tmp_path) -> None:
    p = _write(tmp_path, GOOD)
    spec = write_tip(p, np.array([0.001, -0.002, 0.1234]), 0.31, "pivot test")
    assert spec.tip_m == pytest.approx([0.001, -0.002, 0.1234])
    assert spec.tip_rms_mm == pytest.approx(0.31) and spec.tip_source == "pivot test"
    assert load_tool(str(p)).markers[0].corners_m == pytest.approx(spec.markers[0].corners_m)


def test_tools_print_is_true_to_scale(repo_root, tmp_path, monkeypatch, capsys) -> None:
    """Every marker on the printed PNG measures its size in the tool file (found and
    measured by OpenCV's detector on the image itself, at the sheet's DPI)."""
    import cv2
    from PIL import Image

    monkeypatch.chdir(repo_root)
    dpi = 200
    assert main(["tools", "print", "--out", str(tmp_path / "s.png"), "--dpi", str(dpi)]) == 0
    assert "8 markers of needle-guide, pointer" in capsys.readouterr().out
    with Image.open(tmp_path / "s.png") as im:
        assert im.info["dpi"][0] == pytest.approx(dpi, abs=0.01)
        assert im.size == (int(210 / 25.4 * dpi), int(297 / 25.4 * dpi))  # A4 portrait
        gray = np.asarray(im.convert("L"))
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))
    corners, ids, _ = detector.detectMarkers(gray)
    assert ids is not None
    found = {int(i): c.reshape(4, 2) for i, c in zip(ids.ravel(), corners, strict=True)}
    specs = load_tools(("needle-guide", "pointer"), "hardware/tools")
    expected = {m.id: m.size_m * 1000.0 for s in specs for m in s.markers}
    assert set(found) == set(expected)
    for marker_id, c in found.items():
        side_mm = float(np.linalg.norm(c - np.roll(c, -1, axis=0), axis=1).mean()) / dpi * 25.4
        # Detected corners lie on the outer edge of the black border, +-1 px.
        assert side_mm == pytest.approx(expected[marker_id], abs=2 * 25.4 / dpi), marker_id
    assert main(["tools", "print", "pointer", "--out", str(tmp_path / "p.pdf")]) == 0
    pdf = (tmp_path / "p.pdf").read_bytes()
    box = re.search(rb"MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf)
    assert box is not None
    assert float(box[1]) == pytest.approx(210 / 25.4 * 72, abs=0.01)
    # Each marker is an image placed by a "w 0 0 h x y cm /In Do" in the page's content:
    # its width and height on the page, in points, are the marker's side.
    placed = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            continue
        placed += re.findall(rb"([\d.]+) 0 0 ([\d.]+) [\d.]+ [\d.]+ cm /I\d+ Do", content)
    pointer = load_tools(("pointer",), "hardware/tools")[0]
    assert len(placed) == len(pointer.markers)
    for (w, h), m in zip(placed, pointer.markers, strict=True):
        side_mm = m.size_m * 1000.0
        assert float(w) / 72 * 25.4 == pytest.approx(side_mm, abs=0.25)
        assert float(h) / 72 * 25.4 == pytest.approx(side_mm, abs=0.25)


def test_tools_commands_refuse_bad_input_in_one_line(repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    assert main(["tools", "print", "nope", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tool 'nope' not found" in err and "needle-guide, pointer" in err
    assert len(err.splitlines()) == 1
    assert main(["tools", "print", "--out", str(tmp_path / "x.svg")]) == 2
    assert "use a .png or .pdf" in capsys.readouterr().err
    assert main(["tools", "list"]) == 0
    assert "needle-guide: 5 markers [0, 1, 2, 3, 4]" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", 'a\nb"c', "x" * 65, "-lead", "a b", "tool/../x"])
def test_tool_names_are_restricted_to_a_safe_word(tmp_path, name) -> None:
    text = GOOD.replace('name = "t"', f"name = {json.dumps(name)}")
    with pytest.raises(ToolError, match="is not a tool name"):
        load_tool(str(_write(tmp_path, text)))


def test_two_files_with_the_same_name_or_ids_are_refused(tmp_path) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD)  # the same name and the same marker ids
    with pytest.raises(ToolError, match="both name a tool 't'") as err:
        load_tools(("a", "b"), tmp_path)
    assert str(tmp_path / "b.toml") in str(err.value)
    (tmp_path / "b.toml").write_text(GOOD.replace('name = "t"', 'name = "u"'))
    with pytest.raises(ToolError, match=r"both use marker 3 .*in the tool file .*b\.toml"):
        load_tools(("a", "b"), tmp_path)
    with pytest.raises(ToolError, match="listed twice"):
        load_tools(("a", str(tmp_path / "a.toml")), tmp_path)


def test_type_errors_name_the_tool_file(tmp_path) -> None:
    p = _write(tmp_path, GOOD.replace("id = 3", "id = true"))
    with pytest.raises(ToolError) as err:
        load_tool(str(p))
    assert err.value.fix == f"fix the value in the tool file {p}"
    assert "configuration file" not in str(err.value)


def test_write_tip_escapes_the_source_and_never_writes_an_unreadable_file(tmp_path) -> None:
    p = _write(tmp_path, "# the tool's frame\n" + GOOD)
    source = 'pivot "run 3"\\ C:\\cal.json'
    spec = write_tip(p, np.array([0.0, 0.0, 0.1]), 0.2, source)
    assert spec.tip_source == source and spec.name == "t"
    assert p.read_text().startswith("# the tool's frame\n")
    before = p.read_text()
    with pytest.raises(ToolError, match="would not read back"):
        write_tip(p, np.array([0.0, 0.0, 0.1]), 0.2, "two\nlines")
    with pytest.raises(ToolError, match="would not read back"):
        write_tip(p, np.array([0.0, 0.0, 0.9]), 0.2, "too far")  # tip over 500 mm
    assert p.read_text() == before

"""Slicer's legacy .fcsv markups (edge/plan/fcsv.py): written the way Slicer 4.4, 4.7 and
4.11+ write them, loaded to the same landmarks as the .mrk.json of the same points, through
the plan loader and `edge plan sign`; bad files refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.errors import PlanError
from edge.plan.load import read_markups, read_plan
from support.synthetic_face import face_landmarks_m, face_mesh, write_plan

COLUMNS = "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID"


def fcsv_text(version: str, system: str, landmarks_lps_mm: dict[str, list[float]]) -> str:
    """An .fcsv as Slicer's fiducial storage node writes it: header, then one row per point
    (id, x, y, z in mm in the declared system, orientation, vis, sel, lock, label, desc,
    associated node)."""
    ras = system in ("0", "RAS")
    lines = [f"# Markups fiducial file version = {version}", f"# CoordinateSystem = {system}"]
    lines.append(COLUMNS)
    for i, (name, p) in enumerate(landmarks_lps_mm.items()):
        x, y, z = (float(v) for v in p)
        if ras:
            x, y = -x, -y
        lines.append(f"vtkMRMLMarkupsFiducialNode_{i},{x!r},{y!r},{z!r},0,0,0,1,1,1,0,{name},,")
    return "\n".join(lines) + "\n"


def mm_lps(plan_dir: Path) -> dict[str, list[float]]:
    """The landmarks of a .mrk.json (LPS, mm) as its control points hold them."""
    doc = json.loads((plan_dir / "landmarks.mrk.json").read_text())
    assert doc["markups"][0].get("coordinateSystem", "LPS") == "LPS"
    return {cp["label"]: cp["position"] for cp in doc["markups"][0]["controlPoints"]}


def face_mm() -> dict[str, list[float]]:
    return {k: list(v * 1000.0) for k, v in face_landmarks_m().items()}


@pytest.fixture(scope="module")
def small_mesh():
    return face_mesh(step_m=8e-3)


@pytest.mark.parametrize(
    ("version", "system"),
    [("4.4", "0"), ("4.7", "1"), ("4.11", "LPS"), ("5.2", "RAS")],
)
def test_fcsv_and_mrk_json_of_the_same_points_load_identically(
    tmp_path: Path, small_mesh, version: str, system: str
) -> None:
    plan_dir = write_plan(tmp_path / "plan", mesh=small_mesh)
    from_json = read_markups(plan_dir / "landmarks.mrk.json", "landmarks.mrk.json")
    fcsv = plan_dir / "landmarks.fcsv"
    fcsv.write_text(fcsv_text(version, system, mm_lps(plan_dir)))
    from_fcsv = read_markups(fcsv, "landmarks.fcsv")
    assert list(from_fcsv) == list(from_json)
    for name in from_json:
        np.testing.assert_array_equal(from_fcsv[name], from_json[name])
    for name, p in face_landmarks_m().items():
        np.testing.assert_allclose(from_fcsv[name], p, atol=1e-7)


def test_plan_naming_an_fcsv_loads_and_signs(tmp_path: Path, small_mesh, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plan", mesh=small_mesh)
    want = read_plan(plan_dir).landmarks
    (plan_dir / "landmarks.fcsv").write_text(fcsv_text("4.4", "0", mm_lps(plan_dir)))
    (plan_dir / "landmarks.mrk.json").unlink()
    manifest = json.loads((plan_dir / "plan.json").read_text())
    manifest["landmarks"] = "landmarks.fcsv"
    (plan_dir / "plan.json").write_text(json.dumps(manifest))
    got = read_plan(plan_dir).landmarks
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}
    assert main(["plan", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["plan", "sign", str(plan_dir), "--key", str(tmp_path / "k.key")]) == 0
    code = main(["plan", "verify", str(plan_dir), "--pubkey", str(tmp_path / "k.pub")])
    assert code == 0
    assert "10 landmarks" in capsys.readouterr().out


def test_quoted_label_and_blank_lines(tmp_path: Path) -> None:
    text = fcsv_text("4.11", "LPS", face_mm()).replace(",nasion,", ',"nasion",')
    path = tmp_path / "l.fcsv"
    path.write_text(text + "\n\n")
    got = read_markups(path, "l.fcsv")
    np.testing.assert_allclose(got["nasion"], face_landmarks_m()["nasion"], atol=1e-12)


GOOD = fcsv_text("4.11", "LPS", face_mm())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD.replace("# Markups fiducial file version = 4.11\n", ""), "file version"),
        (GOOD.replace("CoordinateSystem = LPS", "CoordinateSystem = 2"), "CoordinateSystem"),
        (GOOD.replace("CoordinateSystem = LPS", "CoordinateSystem = IJK"), "CoordinateSystem"),
        (GOOD.replace(",nasion,", ",nose bridge,"), "unknown landmark name"),
        (GOOD.replace(",0,0,0,1,1,1,0,nasion", "x,0,0,0,1,1,1,0,nasion"), "not numbers"),
        (GOOD + "p,1,2,3,0,0,0,1,1,1,0,a,b,c,d,e\n", "fields"),
        (GOOD + "p,1,2,3\n", "no label"),
        (GOOD + GOOD.splitlines()[3] + "\n", "appears twice"),
        (GOOD.replace("0,0,0,1,1,1,0,nasion", "0,0,0,0,0,0,0,nasion"), ""),
        ("\x00" * 10, "NUL"),
        ("p,1,2,3\n" * 1, "file version"),
    ],
)
def test_bad_fcsv_is_one_line_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "l.fcsv"
    path.write_text(text)
    if not needle:  # a harmless edit: still loads
        read_markups(path, "l.fcsv")
        return
    with pytest.raises(PlanError) as info:
        read_markups(path, "l.fcsv")
    assert needle in str(info.value.problem)
    assert "\n" not in str(info.value.problem)


def test_oversized_and_binary_fcsv_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.fcsv"
    path.write_bytes(GOOD.encode() + b"#" * (1024 * 1024))
    with pytest.raises(PlanError, match="KiB"):
        read_markups(path, "big.fcsv")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PlanError):
        read_markups(path, "big.fcsv")
    rows = "".join(f"p{i},1,2,3,0,0,0,1,1,1,0,nasion,,\n" for i in range(1001))
    path.write_text(GOOD.splitlines()[0] + "\n" + rows)
    with pytest.raises(PlanError, match="more than 1000 points"):
        read_markups(path, "big.fcsv")

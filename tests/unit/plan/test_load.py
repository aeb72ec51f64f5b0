"""Plan loading: formats, units and coordinate systems, and every bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import trimesh

from edge.errors import PlanError
from edge.plan.load import load_plan, read_plan
from support.synthetic_face import TARGETS, edit_json, face_landmarks_m, face_mesh, write_plan


@pytest.fixture(scope="module")
def small_mesh():
    return face_mesh(step_m=6e-3)


@pytest.fixture
def plan_dir(tmp_path: Path, small_mesh) -> Path:
    return write_plan(tmp_path / "plan", mesh=small_mesh)


def _same_surface(a, b) -> None:
    """Same triangles (as corner coordinates, order-free), within float32 rounding."""
    ta = np.sort(np.round(a.vertices[a.faces] * 1e5).reshape(len(a.faces), -1), axis=0)
    tb = np.sort(np.round(b.vertices[b.faces] * 1e5).reshape(len(b.faces), -1), axis=0)
    assert ta.shape == tb.shape
    assert np.abs(ta - tb).max() <= 1


def _points(plan_dir: Path) -> list[dict]:
    return json.loads((plan_dir / "landmarks.mrk.json").read_text())["markups"][0]["controlPoints"]


def test_loads_in_metres_lps(plan_dir: Path, small_mesh) -> None:
    plan = read_plan(plan_dir)
    assert plan.case_id == "SYNTH-0001"
    _same_surface(plan.skin, small_mesh)
    assert len(plan.skin.vertices) == len(small_mesh.vertices)  # shared again after STL
    assert len(plan.skin.sha256) == 64
    for name, p in face_landmarks_m().items():
        np.testing.assert_allclose(plan.landmarks[name], p, atol=1e-7)  # written to 0.1 µm
    for name, p in TARGETS.items():
        np.testing.assert_allclose(plan.targets[name], p, atol=1e-12)
    assert plan.trajectories[0].name == "biopsy"
    np.testing.assert_allclose(plan.trajectories[0].entry, [0.0, -0.08, 0.04])
    np.testing.assert_allclose(plan.cut_planes[0].normal, [1.0, 0.0, 0.0])
    assert plan.meta["units"] == "mm" and plan.meta["coordinate_system"] == "LPS"
    assert not plan.signed


def test_ras_plan_and_ras_markups_give_the_same_lps_plan(tmp_path: Path, small_mesh) -> None:
    lps = read_plan(write_plan(tmp_path / "lps", mesh=small_mesh))
    ras_dir = tmp_path / "ras"
    flip = np.array([-1.0, -1.0, 1.0])
    ras_mesh = type(small_mesh)(small_mesh.vertices * flip, small_mesh.faces)
    write_plan(ras_dir, mesh=ras_mesh)

    def to_ras(d: dict) -> None:
        d["coordinate_system"] = "RAS"
        for t in d["targets"]:
            t["position"] = list(np.asarray(t["position"]) * flip)
        for t in d["trajectories"]:
            t["entry"] = list(np.asarray(t["entry"]) * flip)
            t["target"] = list(np.asarray(t["target"]) * flip)
        d["cut_planes"][0]["normal"] = [-1, 0, 0]

    edit_json(ras_dir / "plan.json", to_ras)

    def markups_to_legacy_ras(d: dict) -> None:
        m = d["markups"][0]
        m["coordinateSystem"] = 0  # Slicer's legacy numeric code for RAS
        for cp in m["controlPoints"]:
            cp["position"] = list(np.asarray(cp["position"]) * flip)

    edit_json(ras_dir / "landmarks.mrk.json", markups_to_legacy_ras)
    ras = read_plan(ras_dir)
    _same_surface(ras.skin, lps.skin)
    for name in lps.landmarks:
        np.testing.assert_allclose(ras.landmarks[name], lps.landmarks[name], atol=1e-9)
    for name in lps.targets:
        np.testing.assert_allclose(ras.targets[name], lps.targets[name], atol=1e-9)
    np.testing.assert_allclose(ras.trajectories[0].entry, lps.trajectories[0].entry, atol=1e-9)
    np.testing.assert_allclose(ras.cut_planes[0].normal, lps.cut_planes[0].normal)


def test_units_in_metres(plan_dir: Path, small_mesh) -> None:
    trimesh.Trimesh(small_mesh.vertices, small_mesh.faces, process=False).export(
        plan_dir / "skin.stl"
    )

    def to_m(d: dict) -> None:
        d["units"] = "m"
        d["targets"] = [{"name": "t", "position": [0.01, 0.02, 0.03]}]
        d["trajectories"] = [{"name": "b", "entry": [0, -0.08, 0.04], "target": [0, 0.04, 0.01]}]
        d["cut_planes"] = []

    edit_json(plan_dir / "plan.json", to_m)
    plan = read_plan(plan_dir)
    np.testing.assert_allclose(plan.targets["t"], [0.01, 0.02, 0.03])
    np.testing.assert_allclose(plan.trajectories[0].entry, [0, -0.08, 0.04])
    _same_surface(plan.skin, small_mesh)  # metres on disk, metres in memory


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_ply_and_obj_meshes(plan_dir: Path, small_mesh, fmt: str) -> None:
    trimesh.Trimesh(small_mesh.vertices * 1000, small_mesh.faces, process=False).export(
        plan_dir / f"skin.{fmt}"
    )
    (plan_dir / "skin.stl").unlink()
    edit_json(plan_dir / "plan.json", lambda d: d.update(skin=f"skin.{fmt}"))
    plan = read_plan(plan_dir)
    _same_surface(plan.skin, small_mesh)


def test_cut_plane_from_three_points_and_structure(plan_dir: Path, small_mesh) -> None:
    trimesh.Trimesh(small_mesh.vertices * 1000, small_mesh.faces, process=False).export(
        plan_dir / "nerve.stl"
    )

    def add(d: dict) -> None:
        d["cut_planes"] = [{"name": "axial", "points": [[0, 0, 5], [10, 0, 5], [0, 10, 5]]}]
        d["structures"] = [{"name": "nerve", "mesh": "nerve.stl", "color": [255, 0, 0]}]

    edit_json(plan_dir / "plan.json", add)
    plan = read_plan(plan_dir)
    np.testing.assert_allclose(plan.cut_planes[0].normal, [0, 0, 1])
    np.testing.assert_allclose(plan.cut_planes[0].point, [0, 0, 0.005])
    assert plan.structures[0].color_rgb == (255, 0, 0)
    assert len(plan.structures[0].mesh.faces) == len(small_mesh.faces)


def test_unsigned_plan_needs_key_or_explicit_override(plan_dir: Path, caplog) -> None:
    with pytest.raises(PlanError, match="no public key"):
        load_plan(plan_dir)
    with caplog.at_level(logging.WARNING, logger="edge.plan.load"):
        plan = load_plan(plan_dir, allow_unsigned=True)
    assert not plan.signed and len(plan.digest) == 64
    assert any(r.levelno == logging.WARNING for r in caplog.records)


# --------------------------------------------------------------------------- bad input


def _garbage_stl(d: Path) -> None:
    (d / "skin.stl").write_bytes(b"solid x\n this is not a mesh \x00\x01")


def _no_faces(d: Path) -> None:
    (d / "skin.stl").unlink()
    (d / "skin.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
    )
    edit_json(d / "plan.json", lambda m: m.update(skin="skin.ply"))


def _nan_vertex(d: Path) -> None:
    (d / "skin.stl").unlink()
    (d / "skin.obj").write_text("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n")
    edit_json(d / "plan.json", lambda m: m.update(skin="skin.obj"))


def _markups(change):
    def apply(d: Path) -> None:
        edit_json(d / "landmarks.mrk.json", change)

    return apply


def _manifest(change):
    def apply(d: Path) -> None:
        edit_json(d / "plan.json", change)

    return apply


def _cps(doc: dict) -> list:
    return doc["markups"][0]["controlPoints"]


BAD_PLANS = {
    "missing plan.json": (lambda d: (d / "plan.json").unlink(), "no plan.json"),
    "manifest not json": (lambda d: (d / "plan.json").write_text("{oops"), "cannot read"),
    "missing skin file": (lambda d: (d / "skin.stl").unlink(), "does not exist"),
    "unreadable mesh": (_garbage_stl, "cannot read mesh|no triangle"),
    "mesh without faces": (_no_faces, "no triangle faces"),
    "non-finite vertices": (_nan_vertex, "non-finite"),
    "missing markups": (lambda d: (d / "landmarks.mrk.json").unlink(), "does not exist"),
    "markups not json": (
        lambda d: (d / "landmarks.mrk.json").write_text("[1,"),
        "cannot read markups",
    ),
    "unknown landmark name": (
        _markups(lambda m: _cps(m)[0].update(label="left_ear")),
        "unknown landmark name",
    ),
    "duplicate landmark": (
        _markups(lambda m: _cps(m)[1].update(label=_cps(m)[0]["label"])),
        "appears twice",
    ),
    "too few landmarks": (
        _markups(lambda m: m["markups"][0].update(controlPoints=_cps(m)[:3])),
        "at least 4",
    ),
    "collinear landmarks": (
        _markups(
            lambda m: m["markups"][0].update(
                controlPoints=[
                    {"label": n, "position": [0.0, 0.0, 10.0 * i]}
                    for i, n in enumerate(["nasion", "pronasale", "subnasale", "pogonion"])
                ]
            )
        ),
        "collinear",
    ),
    "undefined landmark position": (
        _markups(lambda m: _cps(m)[0].update(positionStatus="undefined")),
        "no defined position",
    ),
    "markups unknown coordinate system": (
        _markups(lambda m: m["markups"][0].update(coordinateSystem="IJK")),
        "unknown coordinateSystem",
    ),
    "plan unknown coordinate system": (
        _manifest(lambda m: m.update(coordinate_system="XYZ")),
        "unknown coordinate_system",
    ),
    "unknown units": (_manifest(lambda m: m.update(units="inch")), "unknown units"),
    "unknown schema": (_manifest(lambda m: m.update(schema="edge-plan/9")), "unknown schema"),
    "patient name": (
        _manifest(lambda m: m.update(patient_name="Jane Doe")),
        "unknown field 'patient_name'",
    ),
    "nested birth date": (
        _manifest(lambda m: m["targets"][0].update(BirthDate="1970-01-01")),
        r"unknown field 'targets\[0\]\.BirthDate'",
    ),
    "unknown field": (_manifest(lambda m: m.update(colour="red")), "unknown field"),
    "case id with a name": (_manifest(lambda m: m.update(case_id="Jane Doe")), "pseudonymous"),
    "file outside the folder": (
        _manifest(lambda m: m.update(skin="../skin.stl")),
        "outside the plan folder",
    ),
    "bad target position": (
        _manifest(lambda m: m["targets"][0].update(position=[1, 2])),
        "three finite numbers",
    ),
    "duplicate target": (
        _manifest(lambda m: m["targets"].append(dict(m["targets"][0]))),
        "two entries",
    ),
    "zero cut plane normal": (
        _manifest(lambda m: m["cut_planes"][0].update(normal=[0, 0, 0])),
        "no direction",
    ),
    "structure mesh missing": (
        _manifest(lambda m: m.update(structures=[{"name": "n", "mesh": "n.stl"}])),
        "does not exist",
    ),
    "structure bad colour": (
        _manifest(
            lambda m: m.update(structures=[{"name": "n", "mesh": "skin.stl", "color": [300, 0, 0]}])
        ),
        "0-255",
    ),
    "unsupported mesh format": (
        lambda d: (
            (d / "skin.stl").rename(d / "skin.vtk"),
            edit_json(d / "plan.json", lambda m: m.update(skin="skin.vtk")),
        ),
        "STL, PLY or OBJ",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plan_is_one_clear_error(plan_dir: Path, case: str) -> None:
    damage, message = BAD_PLANS[case]
    damage(plan_dir)
    with pytest.raises(PlanError, match=message) as info:
        read_plan(plan_dir)
    assert info.value.fix, "every plan error says how to fix it"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        read_plan(tmp_path / "nowhere")

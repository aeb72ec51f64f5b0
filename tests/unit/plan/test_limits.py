"""Plan size and plausibility limits ([plan] in the configuration): each refusal names the
limit; sizes are refused before the work they bound."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from edge.cli import main
from edge.config import PlanConfig
from edge.errors import PlanError
from edge.plan.load import read_plan
from support.synthetic_face import Doc, edit_json


def _limits(**changes: Any) -> PlanConfig:
    return dataclasses.replace(PlanConfig(), **changes)


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a mesh reaches the parser."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the mesh was parsed before its size was checked")

    monkeypatch.setattr(trimesh, "load", refuse)


def _sparse_binary_stl(path: Path, triangles: int) -> None:
    """A binary STL whose header declares ``triangles``, its size to match (a sparse file)."""
    with path.open("wb") as fh:
        fh.write(b"\0" * 80 + struct.pack("<I", triangles))
        fh.truncate(84 + 50 * triangles)


def test_a_2_million_triangle_mesh_is_refused_from_its_header(
    plan_dir: Path, no_parsing: None
) -> None:
    _sparse_binary_stl(plan_dir / "skin.stl", 2_000_000)
    with pytest.raises(
        PlanError, match=r"mesh skin.stl declares 2000000 triangles; .*plan.max_mesh_triangles"
    ):
        read_plan(plan_dir)


def test_a_ply_header_with_too_many_faces_is_refused_before_parsing(
    plan_dir: Path, no_parsing: None
) -> None:
    (plan_dir / "skin.stl").unlink()
    (plan_dir / "skin.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000\nproperty float x\n"
        b"property float y\nproperty float z\nelement face 2000000\n"
        b"property list uchar int vertex_indices\nend_header\n"
    )
    edit_json(plan_dir / "plan.json", lambda d: d.update(skin="skin.ply"))
    with pytest.raises(PlanError, match=r"declares 2000000 triangles"):
        read_plan(plan_dir)


def test_a_file_over_max_file_mb_is_refused_by_its_size(plan_dir: Path, no_parsing: None) -> None:
    _sparse_binary_stl(plan_dir / "skin.stl", 2_000_000)  # 100 MB
    needle = r"skin\.stl is 100\.0 MB; the limit is plan\.max_file_mb = 50"
    with pytest.raises(PlanError, match=needle):
        read_plan(plan_dir, limits=_limits(max_file_mb=50.0))


def test_a_binary_stl_whose_count_does_not_fit_its_size(plan_dir: Path) -> None:
    data = (plan_dir / "skin.stl").read_bytes()
    (plan_dir / "skin.stl").write_bytes(data[:80] + struct.pack("<I", 10**9) + data[84:])
    with pytest.raises(PlanError, match="declares 1000000000 triangles but whose size"):
        read_plan(plan_dir)


@pytest.mark.parametrize("fmt", ["obj", "stl"])
def test_text_meshes_are_counted_before_parsing(
    plan_dir: Path, small_mesh, fmt: str, no_parsing: None
) -> None:
    mesh = trimesh.Trimesh(small_mesh.vertices * 1000, small_mesh.faces, process=False)
    data = mesh.export(file_type=fmt if fmt == "obj" else "stl_ascii")
    (plan_dir / "skin.stl").unlink()
    (plan_dir / f"skin.{fmt}").write_text(data if isinstance(data, str) else data.decode())
    edit_json(plan_dir / "plan.json", lambda d: d.update(skin=f"skin.{fmt}"))
    with pytest.raises(PlanError, match=f"declares {len(small_mesh.faces)} triangles"):
        read_plan(plan_dir, limits=_limits(max_mesh_triangles=100))


def test_vertex_and_total_limits(plan_dir: Path, small_mesh) -> None:
    vertices = len(small_mesh.vertices)
    with pytest.raises(PlanError, match=f"has {vertices} vertices; .*plan.max_mesh_vertices = 50"):
        read_plan(plan_dir, limits=_limits(max_mesh_vertices=50))
    (plan_dir / "nerve.stl").write_bytes((plan_dir / "skin.stl").read_bytes())
    edit_json(
        plan_dir / "plan.json",
        lambda d: d.update(structures=[{"name": "nerve", "mesh": "nerve.stl"}]),
    )
    faces = len(small_mesh.faces)
    limits = _limits(max_total_triangles=faces + 1)
    with pytest.raises(PlanError, match=f"{2 * faces} triangles together; .*max_total_triangles"):
        read_plan(plan_dir, limits=limits)
    with pytest.raises(PlanError, match=f"{2 * vertices} vertices together"):
        read_plan(plan_dir, limits=_limits(max_total_vertices=vertices + 1))


def _targets(n: int) -> Callable[[Doc], object]:
    return lambda d: d.update(
        targets=[{"name": f"t{i}", "position": [0.0, 40.0, 10.0]} for i in range(n)]
    )


def test_300000_targets_are_refused(plan_dir: Path) -> None:
    edit_json(plan_dir / "plan.json", _targets(300_000))
    with pytest.raises(PlanError, match=r"plan\.json: it is larger than 4194304 bytes, the limit"):
        read_plan(plan_dir)


def test_targets_and_landmarks_over_their_limits(plan_dir: Path) -> None:
    edit_json(plan_dir / "plan.json", _targets(257))
    with pytest.raises(PlanError, match=r"'targets' has 257 entries; .*plan.max_targets = 256"):
        read_plan(plan_dir)
    edit_json(plan_dir / "plan.json", _targets(3))
    assert len(read_plan(plan_dir).targets) == 3

    def many_points(d: Doc) -> None:
        points = d["markups"][0]["controlPoints"]
        d["markups"][0]["controlPoints"] = (points * 7)[:65]

    edit_json(plan_dir / "landmarks.mrk.json", many_points)
    with pytest.raises(PlanError, match=r"has 65 entries; the limit is plan.max_landmarks = 64"):
        read_plan(plan_dir)


def test_a_50_mb_description_and_long_names_are_refused(plan_dir: Path) -> None:
    edit_json(plan_dir / "plan.json", lambda d: d.update(description="x" * 50_000_000))
    with pytest.raises(PlanError, match="larger than 4194304 bytes"):
        read_plan(plan_dir)
    edit_json(plan_dir / "plan.json", lambda d: d.update(description="x" * 5000))
    with pytest.raises(PlanError, match=r"'description' is 5000 .*plan.max_text_chars = 4096"):
        read_plan(plan_dir)
    edit_json(plan_dir / "plan.json", lambda d: d.update(description="x"))
    edit_json(plan_dir / "plan.json", lambda d: d["targets"][0].update(name="n" * 65))
    with pytest.raises(PlanError, match=r"is 65 characters long; .*plan.max_name_chars = 64"):
        read_plan(plan_dir)


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        ("target", [1e300, 0.0, 0.0], r"target 'pituitary' lies at least 1e\+300 mm"),
        ("target", [0.0, 400.0, 0.0], "target 'pituitary' lies at least"),
        ("entry", [0.0, -80.0, 400.0], "trajectory 'biopsy' entry lies"),
        ("plane", [0.0, 0.0, -500.0], "cut plane 'midline' point lies"),
    ],
)
def test_planned_points_far_from_the_skin_are_refused(
    plan_dir: Path, where: str, value: list[float], needle: str
) -> None:
    def move(d: Doc) -> None:
        if where == "target":
            d["targets"][0]["position"] = value
        elif where == "entry":
            d["trajectories"][0]["entry"] = value
        else:
            d["cut_planes"][0]["point"] = value

    edit_json(plan_dir / "plan.json", move)
    with pytest.raises(PlanError, match=needle + r".*plan.max_target_distance_mm = 250") as info:
        read_plan(plan_dir)
    assert "units ('mm')" in str(info.value)


def test_distance_limit_is_read_from_the_configuration(plan_dir: Path) -> None:
    edit_json(plan_dir / "plan.json", lambda d: d["targets"][0].update(position=[0.0, 150.0, 0.0]))
    assert "pituitary" in read_plan(plan_dir).targets  # within 250 mm
    with pytest.raises(PlanError, match=r"lies (at least )?[\d.]+ mm from the skin.* = 100"):
        read_plan(plan_dir, limits=_limits(max_target_distance_mm=100.0))


def test_non_finite_coordinates_are_refused(plan_dir: Path) -> None:
    edit_json(
        plan_dir / "plan.json", lambda d: d["targets"][0].update(position=[float("nan"), 0, 0])
    )
    assert "NaN" in (plan_dir / "plan.json").read_text()
    with pytest.raises(PlanError, match="three finite numbers"):
        read_plan(plan_dir)


@pytest.mark.parametrize(
    ("scale", "units", "hint"),
    [
        (0.1, "mm", "look like centimetres"),  # a 12-unit-wide skin declared as mm
        (0.001, "mm", 'look like metres: set "units": "m"'),
        (1.0, "m", 'look like millimetres: set "units": "mm"'),
    ],
)
def test_a_skin_not_the_size_of_a_head_is_refused_with_a_units_hint(
    plan_dir: Path, small_mesh, scale: float, units: str, hint: str
) -> None:
    mm = trimesh.Trimesh(small_mesh.vertices * 1000 * scale, small_mesh.faces, process=False)
    mm.export(plan_dir / "skin.stl")
    edit_json(plan_dir / "plan.json", lambda d: d.update(units=units))
    with pytest.raises(PlanError, match=r"skin mesh skin.stl is .* mm across") as info:
        read_plan(plan_dir)
    assert hint in str(info.value) and "plan.min_skin_size_mm" in str(info.value)


def test_the_twelve_unit_skin(plan_dir: Path, small_mesh) -> None:
    v = small_mesh.vertices - small_mesh.vertices.min(axis=0)
    v = v / np.ptp(v, axis=0).max() * 12.0  # 12 units wide, declared as millimetres
    trimesh.Trimesh(v, small_mesh.faces, process=False).export(plan_dir / "skin.stl")
    with pytest.raises(PlanError, match=r"is 1\d\.?\d* mm across.*look like centimetres"):
        read_plan(plan_dir)


def test_edge_plan_verify_applies_the_configured_limits(
    tmp_path: Path, plan_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["plan", "sign", str(plan_dir), "--key", str(tmp_path / "k.key")]) == 0
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[plan]\nmax_mesh_triangles = 100\n")
    capsys.readouterr()
    argv = ["plan", "verify", str(plan_dir), "--pubkey", str(tmp_path / "k.pub")]
    assert main([*argv, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan.max_mesh_triangles = 100" in err
    assert "Traceback" not in err
    assert main(argv) == 0  # the defaults pass


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("max_mesh_triangles = 0", "'plan.max_mesh_triangles' = 0 is out of range"),
        ("max_landmarks = 3", "'plan.max_landmarks' = 3 is out of range"),
        ("max_target_distance_mm = nan", "'plan.max_target_distance_mm' = nan"),
        ("max_file_mb = -1", "'plan.max_file_mb' = -1"),
        ("min_skin_size_mm = 700.0", "min_skin_size_mm (700.0) must be below max_skin_size_mm"),
    ],
)
def test_edge_config_check_validates_the_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f"[plan]\n{text}\n")
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_sizes_are_checked_before_the_signature_hashes_anything(
    plan_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.plan import sign
    from edge.plan.load import load_plan

    with (plan_dir / "junk.bin").open("wb") as fh:
        fh.truncate(200_000_000)  # sparse: 200 MB on paper

    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was hashed before the sizes were checked")

    monkeypatch.setattr(sign, "_file_sha256", refuse)
    with pytest.raises(PlanError, match=r"junk\.bin is 200\.0 MB; the limit is plan\.max_file_mb"):
        load_plan(plan_dir, public_key=bytes(32))

"""The plan writer: what it writes reads back as the same plan; names that are not files refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.plan.load import read_plan
from edge.plan.model import Mesh, Structure
from edge.plan.write import write_plan
from support.synthetic_face import face_mesh, face_plan


@pytest.fixture(scope="module")
def small_mesh() -> Mesh:
    return face_mesh(step_m=8e-3)


def test_written_plan_reads_back_the_same(tmp_path: Path, small_mesh: Mesh) -> None:
    vessel = Mesh(small_mesh.vertices * 0.2 + [0.0, 0.03, 0.0], small_mesh.faces)
    plan = dataclasses.replace(
        face_plan(mesh=small_mesh), structures=(Structure("vessel", vessel, (200, 0, 0)),)
    )
    manifest = write_plan(plan, tmp_path / "plan")
    assert manifest == tmp_path / "plan" / "plan.json"
    assert sorted(p.name for p in manifest.parent.iterdir()) == [
        "landmarks.mrk.json",
        "plan.json",
        "skin.stl",
        "vessel.stl",
    ]
    doc = json.loads(manifest.read_text())
    assert doc["schema"] == "edge-plan/1" and doc["units"] == "mm"
    back = read_plan(manifest.parent)
    assert back.case_id == plan.case_id
    assert list(back.landmarks) == list(plan.landmarks)
    for name, p in plan.landmarks.items():
        np.testing.assert_allclose(back.landmarks[name], p, atol=1e-7)  # 0.1 µm
    for name, p in plan.targets.items():
        np.testing.assert_allclose(back.targets[name], p, atol=1e-7)
    (t,), (c,) = back.trajectories, back.cut_planes
    np.testing.assert_allclose(t.entry, plan.trajectories[0].entry, atol=1e-7)
    np.testing.assert_allclose(c.normal, plan.cut_planes[0].normal)
    (s,) = back.structures
    assert s.name == "vessel" and s.color_rgb == (200, 0, 0)
    np.testing.assert_allclose(
        s.mesh.vertices[s.mesh.faces], vessel.vertices[vessel.faces], atol=1e-6
    )
    np.testing.assert_allclose(
        back.skin.vertices[back.skin.faces], small_mesh.vertices[small_mesh.faces], atol=1e-6
    )


@pytest.mark.parametrize("name", ["../outside", "sub/dir", "skin"])
def test_a_structure_name_that_is_not_a_file_is_refused_before_writing(
    tmp_path: Path, small_mesh: Mesh, name: str
) -> None:
    plan = dataclasses.replace(
        face_plan(mesh=small_mesh), structures=(Structure(name, small_mesh, (0, 0, 0)),)
    )
    with pytest.raises(ValueError, match="structure name"):
        write_plan(plan, tmp_path / "plan")
    assert not (tmp_path / "plan").exists()

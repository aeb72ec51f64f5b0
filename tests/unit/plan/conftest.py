"""Fixtures of the plan tests: a coarse synthetic face and its plan folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.plan.model import Mesh
from support.synthetic_face import face_mesh, write_plan


@pytest.fixture(scope="module")
def small_mesh() -> Mesh:
    return face_mesh(step_m=8e-3)


@pytest.fixture
def plan_dir(tmp_path: Path, small_mesh: Mesh) -> Path:
    return write_plan(tmp_path / "plan", mesh=small_mesh)

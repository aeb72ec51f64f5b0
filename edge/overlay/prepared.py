"""The plan's overlay geometry, prepared once per plan instead of once per frame.

A plan does not change while frames are processed; its targets, trajectory ends,
cut planes, asset ids and the names that go with them are the same on every
frame. :class:`PlanPrimitives` holds them as read-only arrays in the plan's
(patient) frame, in the order and shape :func:`edge.overlay.content.build_overlay`
transforms them each frame, so the per-frame work is only the pose's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.plan.model import Mesh, Plan


def mesh_asset_id(mesh: Mesh) -> str:
    """A mesh's asset id on the wire: its file's SHA-256, or one of its arrays when unset."""
    if mesh.sha256:
        return mesh.sha256
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype="<i8").tobytes())
    return h.hexdigest()


def _frozen_rows(rows: list[Any]) -> np.ndarray:
    """(N, 3) float64, C-contiguous and read-only (shared by every frame's overlay)."""
    a = np.ascontiguousarray(np.array(rows, dtype=np.float64).reshape(-1, 3))
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)  # arrays: compared by identity, hashable
class PlanPrimitives:
    """One plan's overlay primitives in the plan's frame (metres), built by :meth:`from_plan`.

    ``targets_patient_m`` (T, 3) in ``target_names`` order (the plan's); per
    trajectory its entry then its target in ``trajectory_ends_patient_m`` (2M, 3);
    the cut planes' points (K, 3, metres) and unit normals (K, 3). Arrays are
    read-only. ``skin_asset`` and ``structure_assets`` are the meshes' asset ids
    (:func:`mesh_asset_id`), which hash whole meshes when a plan has no SHA-256.
    """

    target_names: tuple[str, ...]
    targets_patient_m: np.ndarray
    trajectory_names: tuple[str, ...]
    trajectory_ends_patient_m: np.ndarray
    cut_plane_names: tuple[str, ...]
    cut_points_patient_m: np.ndarray
    cut_normals_patient: np.ndarray
    skin_asset: str
    structure_names: tuple[str, ...]
    structure_assets: tuple[str, ...]
    structure_colors_rgb: tuple[tuple[Any, ...], ...]

    @classmethod
    def from_plan(cls, plan: Plan) -> PlanPrimitives:
        names = tuple(plan.targets)
        return cls(
            target_names=names,
            targets_patient_m=_frozen_rows([plan.targets[n] for n in names]),
            trajectory_names=tuple(t.name for t in plan.trajectories),
            trajectory_ends_patient_m=_frozen_rows(
                [[t.entry, t.target] for t in plan.trajectories]
            ),
            cut_plane_names=tuple(c.name for c in plan.cut_planes),
            cut_points_patient_m=_frozen_rows([c.point for c in plan.cut_planes]),
            cut_normals_patient=_frozen_rows([c.normal for c in plan.cut_planes]),
            skin_asset=mesh_asset_id(plan.skin),
            structure_names=tuple(s.name for s in plan.structures),
            structure_assets=tuple(mesh_asset_id(s.mesh) for s in plan.structures),
            structure_colors_rgb=tuple(tuple(s.color_rgb) for s in plan.structures),
        )

    def structures(self) -> list[dict[str, Any]]:
        """The overlay's ``structures`` entries, new lists and maps for each call."""
        return [
            {"name": name, "asset": asset, "color_rgb": list(color)}
            for name, asset, color in zip(
                self.structure_names, self.structure_assets, self.structure_colors_rgb, strict=True
            )
        ]

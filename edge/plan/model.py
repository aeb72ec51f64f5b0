"""The preoperative plan as the edge process holds it after loading.

Everything here is in **metres**, in the plan's own right-handed frame
(``patient``), converted once on load from the files' units and coordinate
system (see docs/plan-format.md). ``patient_to_camera`` from registration
maps this frame to the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: vertices (N, 3) metres, faces (M, 3) int indices."""

    vertices: np.ndarray
    faces: np.ndarray
    sha256: str = ""  # digest of the source file, the asset's id on the wire


@dataclass(frozen=True)
class Trajectory:
    name: str
    entry: np.ndarray  # (3,) metres
    target: np.ndarray  # (3,) metres


@dataclass(frozen=True)
class CutPlane:
    name: str
    point: np.ndarray  # (3,) metres
    normal: np.ndarray  # (3,) unit vector


@dataclass(frozen=True)
class Structure:
    """A structure to avoid, drawn in its colour."""

    name: str
    mesh: Mesh
    color_rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Plan:
    case_id: str  # pseudonymous; never a patient name
    skin: Mesh
    landmarks: dict[str, np.ndarray]  # name -> (3,) metres
    targets: dict[str, np.ndarray]  # name -> (3,) metres
    trajectories: tuple[Trajectory, ...] = ()
    cut_planes: tuple[CutPlane, ...] = ()
    structures: tuple[Structure, ...] = ()
    digest: str = ""  # canonical digest of the plan folder (what the signature covers)
    signed: bool = False
    meta: dict[str, str] = field(default_factory=dict)

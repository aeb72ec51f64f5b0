"""Write a plan folder as a planning tool exports it (format: docs/plan-format.md).

The inverse of :func:`edge.plan.load.read_plan`: a :class:`~edge.plan.model.Plan`
held in metres, LPS, becomes ``plan.json`` (schema edge-plan/1, millimetres,
LPS), the skin and each structure as binary STL, and the landmarks as a 3D
Slicer markups fiducial file (markups schema v1.0.3). Coordinates in the JSON
files are rounded to 0.1 µm. Every file is written atomically and
``plan.json`` last, so a folder with a manifest is complete. The phantom's
plan (``edge phantom --plan-out``, the demo) and the tests' synthetic plans
are written here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.files import write_atomic
from edge.plan.load import MANIFEST
from edge.plan.model import Mesh, Plan

SCHEMA = "edge-plan/1"
SKIN_FILE = "skin.stl"
LANDMARKS_FILE = "landmarks.mrk.json"
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
    "Markups/Resources/Schema/markups-schema-v1.0.3.json#"
)
DECIMALS_MM = 4  # 0.1 µm, far below any scanner's resolution


def _mm(point_m: np.ndarray) -> list[float]:
    return [round(float(v), DECIMALS_MM) for v in np.asarray(point_m, dtype=np.float64) * 1000.0]


def _stl_bytes(mesh: Mesh) -> bytes:
    """Binary STL of ``mesh`` in millimetres."""
    import trimesh

    tm = trimesh.Trimesh(vertices=mesh.vertices * 1000.0, faces=mesh.faces, process=False)
    data = tm.export(file_type="stl")
    return data if isinstance(data, bytes) else str(data).encode()


def _markups(landmarks_m: dict[str, np.ndarray]) -> dict[str, Any]:
    """A 3D Slicer markups fiducial list of named points (LPS, millimetres in the file)."""
    return {
        "@schema": MARKUPS_SCHEMA,
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": True,
                "labelFormat": "%N-%d",
                "controlPoints": [
                    {
                        "id": str(i + 1),
                        "label": name,
                        "description": "",
                        "associatedNodeID": "",
                        "position": _mm(p),
                        "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                        "selected": True,
                        "locked": True,
                        "visibility": True,
                        "positionStatus": "defined",
                    }
                    for i, (name, p) in enumerate(landmarks_m.items())
                ],
            }
        ],
    }


def _structure_file(name: str) -> str:
    file = f"{name}.stl"
    if Path(file).name != file or file == SKIN_FILE:
        raise ValueError(f"structure name {name!r} cannot name a file in the plan folder")
    return file


def _manifest(plan: Plan) -> dict[str, Any]:
    """The ``plan.json`` object for ``plan`` (millimetres, LPS)."""
    return {
        "schema": SCHEMA,
        "case_id": plan.case_id,
        "units": "mm",
        "coordinate_system": "LPS",
        "skin": SKIN_FILE,
        "landmarks": LANDMARKS_FILE,
        "targets": [{"name": n, "position": _mm(p)} for n, p in plan.targets.items()],
        "trajectories": [
            {"name": t.name, "entry": _mm(t.entry), "target": _mm(t.target)}
            for t in plan.trajectories
        ],
        "cut_planes": [
            {
                "name": c.name,
                "point": _mm(c.point),
                "normal": [round(float(v), DECIMALS_MM) for v in c.normal],
            }
            for c in plan.cut_planes
        ],
        "structures": [
            {"name": s.name, "mesh": _structure_file(s.name), "color": list(s.color_rgb)}
            for s in plan.structures
        ],
    }


def write_plan(plan: Plan, folder: str | Path) -> Path:
    """Write ``plan`` into ``folder`` (created if missing); returns the path of plan.json.

    Files already in the folder are kept (a caller may add its own). Raises
    ValueError for a structure name that cannot be a file name, and OSError
    when the folder cannot be created or written: callers say what to do about it.
    """
    out = Path(folder)
    doc = _manifest(plan)  # checks the names before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SKIN_FILE, _stl_bytes(plan.skin))
    for s in plan.structures:
        write_atomic(out / _structure_file(s.name), _stl_bytes(s.mesh))
    write_atomic(out / LANDMARKS_FILE, json.dumps(_markups(plan.landmarks), indent=2).encode())
    write_atomic(out / MANIFEST, json.dumps(doc, indent=2).encode())
    return out / MANIFEST

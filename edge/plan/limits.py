"""Size and plausibility limits of a plan (the ``[plan]`` section, docs/plan-format.md).

Sizes are checked before the work they bound: a file's size by ``stat`` before
it is read, a mesh's triangle and vertex counts from its header (binary STL's
count, PLY's element lines) before it is parsed, so a 2,000,000-triangle mesh
is refused in microseconds instead of parsed for a minute. Plausibility (a
skin the size of a head, planned points near the skin) is checked on the
loaded plan, in metres. Every refusal is a :class:`PlanError` naming the limit
(``plan.<key>``) and the fix.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from edge.config import PlanConfig
from edge.errors import PlanError

_STL_HEADER_BYTES = 84  # 80-byte header + uint32 triangle count
_STL_TRIANGLE_BYTES = 50
_PLY_HEADER_MAX_BYTES = 64 * 1024
_PLY_ELEMENT = re.compile(rb"^element\s+(vertex|face)\s+(\d+)\s*$", re.MULTILINE)


def check_file_size(path: Path, rel: str, limits: PlanConfig) -> int:
    """The size of plan file ``path`` in bytes; PlanError when over ``plan.max_file_mb``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PlanError(f"cannot read plan file {rel}: {exc.strerror}", "check it") from None
    if size > limits.max_file_mb * 1e6:
        raise PlanError(
            f"plan file {rel} is {size / 1e6:.1f} MB; the limit is "
            f"plan.max_file_mb = {limits.max_file_mb:g}",
            "reduce it (decimate a mesh, store it as binary STL), or raise plan.max_file_mb",
        )
    return size


def declared_counts(path: Path, size: int) -> tuple[int, int] | None:
    """(triangles, vertices) a mesh file declares in its header, read without parsing.

    Binary STL: the header's triangle count (checked against the file size),
    vertices as stored (3 per triangle). PLY: the ``element face``/``element
    vertex`` lines (faces may be polygons: at least that many triangles). None
    when the format declares nothing (ASCII STL, OBJ: counted from the text).
    Raises PlanError for a binary STL whose count disagrees with its size.
    """
    suffix = path.suffix.lower()
    with path.open("rb") as fh:
        head = fh.read(_PLY_HEADER_MAX_BYTES if suffix == ".ply" else _STL_HEADER_BYTES)
    if suffix == ".stl" and len(head) == _STL_HEADER_BYTES:
        count = int.from_bytes(head[80:84], "little")
        if size == _STL_HEADER_BYTES + _STL_TRIANGLE_BYTES * count:
            return count, 3 * count
        if not head.lstrip().lower().startswith(b"solid"):
            raise PlanError(
                f"mesh {path.name} is a binary STL whose header declares {count} triangles "
                f"but whose size ({size} bytes) does not fit",
                "re-export it",
            )
    if suffix == ".ply" and head.startswith(b"ply"):
        end = head.find(b"end_header")
        counts = dict(_PLY_ELEMENT.findall(head[: end if end >= 0 else len(head)]))
        return int(counts.get(b"face", 0)), int(counts.get(b"vertex", 0))
    return None


def counted_in_text(data: bytes, suffix: str) -> tuple[int, int] | None:
    """(triangles, vertices) counted in an ASCII STL or OBJ file's bytes, without parsing."""
    if suffix == ".stl" and data.lstrip()[:5].lower() == b"solid":
        facets = data.count(b"endfacet")
        return facets, 3 * facets
    if suffix == ".obj":
        text = b"\n" + data
        return text.count(b"\nf "), text.count(b"\nv ")
    return None


def check_mesh_counts(
    rel: str, triangles: int, vertices: int, limits: PlanConfig, *, declared: bool
) -> None:
    """Refuse one mesh over ``max_mesh_triangles`` / ``max_mesh_vertices``.

    ``declared``: the counts come from the file before parsing (vertices as
    stored, before identical ones are merged, so only triangles are checked).
    """
    how = "declares" if declared else "has"
    if triangles > limits.max_mesh_triangles:
        raise PlanError(
            f"mesh {rel} {how} {triangles} triangles; the limit is "
            f"plan.max_mesh_triangles = {limits.max_mesh_triangles}",
            "decimate it (e.g. 3D Slicer's Surface Toolbox), or raise plan.max_mesh_triangles",
        )
    if not declared and vertices > limits.max_mesh_vertices:
        raise PlanError(
            f"mesh {rel} has {vertices} vertices; the limit is "
            f"plan.max_mesh_vertices = {limits.max_mesh_vertices}",
            "decimate it (e.g. 3D Slicer's Surface Toolbox), or raise plan.max_mesh_vertices",
        )


def check_totals(triangles: int, vertices: int, limits: PlanConfig) -> None:
    """Refuse a plan whose meshes together exceed the total limits."""
    for what, count, key in (
        ("triangles", triangles, "max_total_triangles"),
        ("vertices", vertices, "max_total_vertices"),
    ):
        limit = getattr(limits, key)
        if count > limit:
            raise PlanError(
                f"the plan's meshes have {count} {what} together; the limit is "
                f"plan.{key} = {limit}",
                f"decimate the meshes or drop structures, or raise plan.{key}",
            )


# ------------------------------------------------------------------------ plausibility


def check_skin_size(rel: str, vertices_m: np.ndarray, units: str, limits: PlanConfig) -> None:
    """Refuse a skin whose bounding-box diagonal is not a head's, with a hint about units."""
    extent = vertices_m.max(axis=0) - vertices_m.min(axis=0)
    size_mm = float(np.linalg.norm(extent)) * 1000.0
    low, high = limits.min_skin_size_mm, limits.max_skin_size_mm
    if low <= size_mm <= high:
        return
    hints = []
    for factor, unit, fix in (
        (1000.0, "metres", 'set "units": "m" in plan.json'),
        (10.0, "centimetres", "export the plan in millimetres"),
        (1e-3, "millimetres", 'set "units": "mm" in plan.json'),
    ):
        if low <= size_mm * factor <= high and not (unit == "millimetres" and units == "mm"):
            hints.append(f"its coordinates look like {unit}: {fix}")
    raise PlanError(
        f"skin mesh {rel} is {size_mm:.4g} mm across (bounding-box diagonal, in the plan's "
        f"units {units!r}); a head is {low:g}-{high:g} mm "
        "(plan.min_skin_size_mm, plan.max_skin_size_mm)",
        "; ".join(hints) or "check the mesh's scale and the plan's units",
    )


class SkinDistance:
    """Distances from the skin's vertices, for the targets-near-the-skin check."""

    def __init__(self, vertices_m: np.ndarray, limits: PlanConfig) -> None:
        from scipy.spatial import cKDTree

        self.limit_m = limits.max_target_distance_mm / 1000.0
        self.low = vertices_m.min(axis=0) - self.limit_m
        self.high = vertices_m.max(axis=0) + self.limit_m
        self.tree = cKDTree(vertices_m)

    def check(self, point_m: np.ndarray, what: str, units: str) -> None:
        """Refuse ``point_m`` (metres) farther than the limit from every skin vertex."""
        outside = np.maximum(self.low - point_m, 0.0) + np.maximum(point_m - self.high, 0.0)
        if outside.any():  # beyond the box: far, and the distance may not even be finite
            distance = self.limit_m + math.hypot(*(float(v) for v in outside))
            at_least = "at least "
        else:
            distance, at_least = float(self.tree.query(point_m)[0]), ""
        if distance > self.limit_m:
            raise PlanError(
                f"{what} lies {at_least}{distance * 1000.0:.4g} mm from the skin; the limit is "
                f"plan.max_target_distance_mm = {self.limit_m * 1000.0:g}",
                f"check its coordinates and the plan's units ({units!r}) and coordinate system, "
                "or raise plan.max_target_distance_mm",
            )

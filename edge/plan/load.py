"""Load a plan folder (docs/plan-format.md) into :class:`edge.plan.model.Plan`.

Units and coordinate systems are converted exactly once, here, to metres in
LPS (the ``patient`` frame). What the JSON files may hold is checked before it
is used (:mod:`edge.plan.schema`: every key by allowlist, no personal data),
and sizes and plausibility against the ``[plan]`` limits
(:mod:`edge.plan.limits`: sizes before the work they bound). Every problem
with the input is one :class:`PlanError` naming the file, the problem and the
fix.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import PlanConfig
from edge.errors import PlanError
from edge.files import MAX_JSON_BYTES, read_json
from edge.plan import limits as size
from edge.plan.model import CutPlane, Mesh, Plan, Structure, Trajectory
from edge.plan.schema import MARKUPS_SCHEMA, PLAN_SCHEMA, check_document
from edge.plan.sign import SIGNATURE_FILE, plan_digest, plan_files, verify_plan
from edge.registration.landmarks import LANDMARK_INDEX

log = logging.getLogger(__name__)

MANIFEST = "plan.json"
SCHEMAS = ("edge-plan/1",)
UNITS_TO_M = {"mm": 1e-3, "m": 1.0}
# RAS -> LPS flips x and y: a proper rotation, so mesh winding is unchanged.
_TO_LPS = {"LPS": np.array([1.0, 1.0, 1.0]), "RAS": np.array([-1.0, -1.0, 1.0])}
# Slicer's legacy numeric coordinate system codes (as in .fcsv headers): 0 RAS, 1 LPS.
_LEGACY_CODES = {0: "RAS", 1: "LPS"}
MIN_LANDMARKS = 4
# Landmarks closer than this to their best-fit line count as collinear.
MIN_LANDMARK_SPREAD_M = 2e-3

DEFAULT_LIMITS = PlanConfig()
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _read_json_file(path: Path, rel: str, what: str, limits: PlanConfig) -> Any:
    """A plan's JSON file: its size checked (stat) before it is read, then the bounded reader."""
    size.check_file_size(path, rel, limits)
    try:
        return read_json(path, max_bytes=min(MAX_JSON_BYTES, int(limits.max_file_mb * 1e6)))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {what} {rel}: {exc}", "fix or re-export it") from None


class _Reader:
    """Reads one plan folder; knows its units and coordinate system."""

    def __init__(self, root: Path, manifest: dict[str, Any], limits: PlanConfig) -> None:
        self.root = root
        self.manifest = manifest
        self.limits = limits
        self.named: set[str] = {MANIFEST}  # files the manifest names, relative POSIX paths
        self.triangles = 0  # over every mesh read, for the plan's total limits
        self.vertices = 0
        units = manifest.get("units", "mm")
        if units not in UNITS_TO_M:
            raise PlanError(
                f"{MANIFEST}: unknown units {units!r}", "use one of " + ", ".join(UNITS_TO_M)
            )
        cs = manifest.get("coordinate_system", "LPS")
        if cs not in _TO_LPS:
            raise PlanError(f"{MANIFEST}: unknown coordinate_system {cs!r}", "use 'LPS' or 'RAS'")
        self.units = str(units)
        self.coordinate_system = str(cs)
        self.scale = UNITS_TO_M[self.units] * _TO_LPS[self.coordinate_system]

    # ---------------------------------------------------------------- helpers

    def path(self, rel: Any, what: str) -> Path:
        """A file named in the manifest; must stay inside the plan folder (the signature covers
        only that folder)."""
        if not isinstance(rel, str) or not rel:
            raise PlanError(f"{MANIFEST}: '{what}' must name a file", "give a relative file name")
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise PlanError(
                f"{MANIFEST}: '{what}' file {rel} lies outside the plan folder",
                "copy the file into the plan folder and name it relatively",
            )
        if not p.is_file():
            raise PlanError(
                f"plan file {rel} ({what}) does not exist",
                "add it to the plan folder or fix the name",
            )
        self.named.add(p.relative_to(self.root.resolve()).as_posix())
        return p

    def refuse_unnamed_files(self) -> None:
        """Refuse any file in the folder that the manifest does not name (plan.sig aside)."""
        for rel in plan_files(self.root):
            if rel not in self.named:
                raise PlanError(
                    f"plan folder holds {rel}, which {MANIFEST} does not name",
                    f"remove it: a plan folder holds {MANIFEST}, the files it names and "
                    f"{SIGNATURE_FILE} only",
                )

    def point(self, value: Any, what: str) -> np.ndarray:
        """A manifest point in the plan's units/system, returned in metres LPS."""
        return self.scale * _vector(value, f"{MANIFEST}: {what}")

    def mesh(self, rel: Any, what: str) -> Mesh:
        """Read a mesh within the limits: size (stat) and declared counts before parsing."""
        path = self.path(rel, what)
        limits = self.limits
        try:
            file_size = size.check_file_size(path, str(rel), limits)
            declared = size.declared_counts(path, file_size)
            if declared is not None:
                size.check_mesh_counts(str(rel), *declared, limits, declared=True)
            data = path.read_bytes()
        except OSError as exc:
            raise PlanError(
                f"cannot read plan file {rel}: {exc}", "check its permissions"
            ) from None
        counted = size.counted_in_text(data, path.suffix.lower())
        if counted is not None:
            size.check_mesh_counts(str(rel), *counted, limits, declared=True)
        vertices, faces = _read_mesh(path, data, str(rel))
        size.check_mesh_counts(str(rel), len(faces), len(vertices), limits, declared=False)
        self.triangles += len(faces)
        self.vertices += len(vertices)
        size.check_totals(self.triangles, self.vertices, limits)
        return Mesh(
            vertices=vertices * self.scale, faces=faces, sha256=hashlib.sha256(data).hexdigest()
        )

    def named_list(self, key: str) -> list[dict[str, Any]]:
        items = self.manifest.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise PlanError(f"{MANIFEST}: '{key}' must be a list of objects", "fix the manifest")
        seen: set[str] = set()
        for i, item in enumerate(items):
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise PlanError(f"{MANIFEST}: {key}[{i}] has no name", "give every entry a name")
            if name in seen:
                raise PlanError(f"{MANIFEST}: {key} has two entries named {name!r}", "rename one")
            seen.add(name)
        return items


def _vector(value: Any, what: str) -> np.ndarray:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise PlanError(f"{what} must be three finite numbers, got {value!r}", "fix the value")
    return np.asarray(value, dtype=np.float64)


def _read_mesh(path: Path, data: bytes, rel: str) -> tuple[np.ndarray, np.ndarray]:
    import io

    import trimesh

    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("stl", "ply", "obj"):
        raise PlanError(f"mesh {rel} has an unsupported format", "export it as STL, PLY or OBJ")
    try:
        mesh = trimesh.load(io.BytesIO(data), file_type=suffix, force="mesh", process=False)
        # force="mesh" yields a Trimesh (or raises); getattr keeps the type checker honest.
        vertices = np.asarray(getattr(mesh, "vertices", ()), dtype=np.float64)
        faces = np.asarray(getattr(mesh, "faces", ()), dtype=np.int64)
    except Exception as exc:  # trimesh raises many types on malformed files
        raise PlanError(
            f"cannot read mesh {rel}: {type(exc).__name__}: {exc}", "re-export it"
        ) from None
    if faces.ndim != 2 or faces.shape[0] == 0 or faces.shape[1] != 3:
        raise PlanError(f"mesh {rel} has no triangle faces", "export a surface mesh, not points")
    if vertices.ndim != 2 or vertices.shape[0] < 3 or not np.isfinite(vertices).all():
        raise PlanError(f"mesh {rel} has non-finite or missing vertices", "repair and re-export it")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise PlanError(f"mesh {rel} has faces that index missing vertices", "re-export it")
    # STL stores every triangle's corners separately: share identical vertices.
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)[faces]


def read_markups(
    path: Path, rel: str, *, limits: PlanConfig = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Named landmarks from a 3D Slicer markups file (.mrk.json), in metres LPS.

    The file must keep to :data:`edge.plan.schema.MARKUPS_SCHEMA` (no unknown
    key at any depth, no personal data in labels and descriptions) and to
    ``limits``. Honours each markup's ``coordinateSystem`` (``LPS``/``RAS``, or
    the legacy numeric codes 0 = RAS, 1 = LPS) and ``coordinateUnits`` (``mm``
    default).
    """
    try:
        doc = _read_json_file(path, rel, "markups", limits)
    except (OSError, PlanError) as exc:
        problem = exc.problem if isinstance(exc, PlanError) else str(exc)
        raise PlanError(problem, "export it again from 3D Slicer") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise PlanError(f"markups {rel} has no 'markups' list", "export a Slicer .mrk.json file")
    check_document(doc, MARKUPS_SCHEMA, f"markups {rel}", limits)
    points_total = sum(len(m.get("controlPoints", [])) for m in markups)
    if points_total > limits.max_landmarks:
        raise PlanError(
            f"markups {rel} holds {points_total} control points; the limit is "
            f"plan.max_landmarks = {limits.max_landmarks}",
            "keep the named landmarks only, or raise plan.max_landmarks",
        )
    out: dict[str, np.ndarray] = {}
    for m in markups:
        kind = m.get("type", "Fiducial")
        if kind != "Fiducial":
            raise PlanError(
                f"markups {rel}: a markup of type {kind!r} is not a point list",
                "export the landmarks as a point list (type Fiducial)",
            )
        cs = m.get("coordinateSystem", "LPS")
        if isinstance(cs, int) and not isinstance(cs, bool):
            cs = _LEGACY_CODES.get(cs, cs)
        if cs not in _TO_LPS:
            raise PlanError(f"markups {rel}: unknown coordinateSystem {cs!r}", "use 'LPS' or 'RAS'")
        units = m.get("coordinateUnits", "mm")
        if units not in UNITS_TO_M:
            raise PlanError(f"markups {rel}: unknown coordinateUnits {units!r}", "use 'mm'")
        scale = UNITS_TO_M[units] * _TO_LPS[cs]
        points = m.get("controlPoints", [])
        if not isinstance(points, list):
            raise PlanError(f"markups {rel}: 'controlPoints' is not a list", "export it again")
        for cp in points:
            label = cp.get("label") if isinstance(cp, dict) else None
            if not isinstance(label, str):
                raise PlanError(f"markups {rel}: a control point has no label", "name every point")
            if label not in LANDMARK_INDEX:
                raise PlanError(
                    f"markups {rel}: unknown landmark name {label!r}",
                    "use the names in docs/plan-format.md: " + ", ".join(sorted(LANDMARK_INDEX)),
                )
            if label in out:
                raise PlanError(f"markups {rel}: landmark {label!r} appears twice", "keep one")
            if cp.get("positionStatus", "defined") != "defined":
                raise PlanError(
                    f"markups {rel}: landmark {label!r} has no defined position",
                    "place it in 3D Slicer or delete it",
                )
            out[label] = scale * _vector(cp.get("position"), f"markups {rel}: {label} position")
    if len(out) < MIN_LANDMARKS:
        raise PlanError(
            f"markups {rel} has {len(out)} landmarks; registration needs at least {MIN_LANDMARKS}",
            "place more of the named landmarks",
        )
    pts = np.stack(list(out.values()))
    s = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
    # s[1] / sqrt(n) is the RMS distance of the points from their best-fit line.
    if s[1] / math.sqrt(len(pts)) < MIN_LANDMARK_SPREAD_M:
        raise PlanError(
            f"markups {rel}: the landmarks are (nearly) collinear",
            "use landmarks spread over the face (eyes, nose, chin)",
        )
    return out


def load_plan(
    folder: str | Path,
    *,
    public_key: bytes | None = None,
    allow_unsigned: bool = False,
    limits: PlanConfig = DEFAULT_LIMITS,
) -> Plan:
    """Load and validate a plan folder; everything returned is in metres, LPS.

    With ``public_key`` the signature must verify; without one the plan is
    refused. ``allow_unsigned`` is the explicit override: an unsigned or
    failing plan then loads with ``signed=False`` and a WARNING is logged.
    ``limits``: the size and plausibility limits of the ``[plan]`` section.
    Raises PlanError for any bad input (see docs/plan-format.md).
    """
    root = Path(folder)
    # Bound the signature check's work: every file's size (stat) before any is hashed.
    for rel in plan_files(root):
        size.check_file_size(root / rel, rel, limits)
    signed = False
    if public_key is not None:
        try:
            digest = verify_plan(root, public_key)
            signed = True
        except PlanError as exc:
            if not allow_unsigned:
                raise
            log.warning("PLAN SIGNATURE OVERRIDE: loading plan %s despite: %s", root, exc)
            digest = plan_digest(root)
    elif allow_unsigned:
        log.warning("PLAN SIGNATURE OVERRIDE: loading plan %s without checking a signature", root)
        digest = plan_digest(root)
    else:
        raise PlanError(
            f"no public key to verify plan {root}",
            "pass the signer's public key (--pubkey), or the explicit unsigned-plan override",
        )

    return read_plan(root, digest=digest, signed=signed, limits=limits)


def read_plan(
    folder: str | Path,
    *,
    digest: str = "",
    signed: bool = False,
    limits: PlanConfig = DEFAULT_LIMITS,
) -> Plan:
    """Read and validate a plan folder's contents, with no signature check.

    Use :func:`load_plan` at run time; this is for tools that validate a plan
    before signing it. Checks, in order: plan.json's size, schema (every key,
    personal data, lengths, counts), the files it names and that there are no
    others, each mesh's size and counts before parsing it, the markups, then
    plausibility (skin size, planned points near the skin). Raises PlanError
    for any bad input, naming the ``[plan]`` limit where one applies.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PlanError(
            f"plan folder {root} does not exist", "pass the folder that holds plan.json"
        )
    try:
        manifest = _read_json_file(root / MANIFEST, MANIFEST, "manifest", limits)
    except FileNotFoundError:
        raise PlanError(f"plan {root} has no {MANIFEST}", "point at the plan folder") from None
    if not isinstance(manifest, dict):
        raise PlanError(f"{MANIFEST} is not a JSON object", "fix or re-export it")
    check_document(manifest, PLAN_SCHEMA, MANIFEST, limits)
    schema = manifest.get("schema")
    if schema not in SCHEMAS:
        raise PlanError(
            f"{MANIFEST}: unknown schema {schema!r}",
            "this edge reads " + ", ".join(SCHEMAS) + "; update the edge software or re-export",
        )
    case_id = manifest.get("case_id")
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        raise PlanError(
            f"{MANIFEST}: case_id {case_id!r} is not a pseudonymous code",
            "use letters, digits, '.', '_' or '-' only (no names, no spaces), up to 64 characters",
        )

    reader = _Reader(root, manifest, limits)
    landmarks_rel = manifest.get("landmarks")
    landmarks_path = reader.path(landmarks_rel, "landmarks")
    reader.path(manifest.get("skin"), "skin")
    structure_entries = reader.named_list("structures")
    for entry in structure_entries:
        reader.path(entry.get("mesh"), f"structure {entry['name']}")
    reader.refuse_unnamed_files()  # before any large file is read

    skin = reader.mesh(manifest.get("skin"), "skin")
    size.check_skin_size(str(manifest.get("skin")), skin.vertices, reader.units, limits)
    landmarks = read_markups(landmarks_path, str(landmarks_rel), limits=limits)

    targets = {
        t["name"]: reader.point(t.get("position"), f"target {t['name']} position")
        for t in reader.named_list("targets")
    }
    trajectories = tuple(
        Trajectory(
            name=t["name"],
            entry=reader.point(t.get("entry"), f"trajectory {t['name']} entry"),
            target=reader.point(t.get("target"), f"trajectory {t['name']} target"),
        )
        for t in reader.named_list("trajectories")
    )
    cut_planes = tuple(_cut_plane(reader, c) for c in reader.named_list("cut_planes"))
    structures = tuple(_structure(reader, s) for s in structure_entries)

    near = size.SkinDistance(skin.vertices, limits)
    units = reader.units
    for name, p in landmarks.items():
        near.check(p, f"markups {landmarks_rel}: landmark {name!r}", units)
    for name, p in targets.items():
        near.check(p, f"{MANIFEST}: target {name!r}", units)
    for t in trajectories:
        near.check(t.entry, f"{MANIFEST}: trajectory {t.name!r} entry", units)
        near.check(t.target, f"{MANIFEST}: trajectory {t.name!r} target", units)
    for c in cut_planes:
        near.check(c.point, f"{MANIFEST}: cut plane {c.name!r} point", units)
    for st in structures:
        centre = (st.mesh.vertices.min(axis=0) + st.mesh.vertices.max(axis=0)) / 2.0
        near.check(centre, f"{MANIFEST}: structure {st.name!r} (its centre)", units)

    return Plan(
        case_id=case_id,
        skin=skin,
        landmarks=landmarks,
        targets=targets,
        trajectories=trajectories,
        cut_planes=cut_planes,
        structures=structures,
        digest=digest,
        signed=signed,
        meta={
            "schema": str(schema),
            "units": reader.units,
            "coordinate_system": reader.coordinate_system,
            "folder": root.name,
        },
    )


def _cut_plane(reader: _Reader, c: dict[str, Any]) -> CutPlane:
    name = c["name"]
    if "points" in c:
        pts = c["points"]
        if not isinstance(pts, list) or len(pts) != 3:
            raise PlanError(f"{MANIFEST}: cut plane {name} needs three points", "fix the manifest")
        p = [reader.point(v, f"cut plane {name} point") for v in pts]
        normal = np.cross(p[1] - p[0], p[2] - p[0])
        point = p[0]
    else:
        point = reader.point(c.get("point"), f"cut plane {name} point")
        # Normals are directions: the axis flip applies, the unit scale does not matter.
        normal = np.sign(reader.scale) * _vector(c.get("normal"), f"{MANIFEST}: cut plane {name}")
    length = float(np.linalg.norm(normal))
    if length < 1e-12:
        raise PlanError(
            f"{MANIFEST}: cut plane {name} has no direction (zero normal or collinear points)",
            "give a non-zero normal or three points not on one line",
        )
    return CutPlane(name=name, point=point, normal=normal / length)


def _structure(reader: _Reader, s: dict[str, Any]) -> Structure:
    name = s["name"]
    color = s.get("color", [255, 255, 0])
    if (
        not isinstance(color, list)
        or len(color) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)
    ):
        raise PlanError(
            f"{MANIFEST}: structure {name} color {color!r} is not [r, g, b] in 0-255",
            "fix the colour",
        )
    return Structure(
        name=name,
        mesh=reader.mesh(s.get("mesh"), f"structure {name}"),
        color_rgb=(color[0], color[1], color[2]),
    )


def load_configured_plan(config: PlanConfig) -> Plan:
    """Load the plan named by the ``[plan]`` configuration section.

    The signature is checked with ``config.public_key``; ``config.allow_unsigned``
    is the explicit, logged override. Raises PlanError (no plan configured, bad
    key file, bad or unsigned plan).
    """
    from edge.plan.sign import load_public_key

    if not config.path:
        raise PlanError("no plan configured", "set [plan] path to the plan folder")
    key = load_public_key(config.public_key) if config.public_key else None
    return load_plan(
        config.path, public_key=key, allow_unsigned=config.allow_unsigned, limits=config
    )

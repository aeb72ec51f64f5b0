"""3D Slicer's legacy markups fiducial CSV (``.fcsv``), read into the same markups
document a ``.mrk.json`` gives, so both go through one set of checks and label rules
(:func:`edge.plan.load.read_markups`).

The format, as Slicer 4.x and 5.x write it (Slicer's
``vtkMRMLMarkupsFiducialStorageNode``): header lines that begin with ``#``::

    # Markups fiducial file version = 4.11
    # CoordinateSystem = LPS
    # columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID

then one comma-separated line per point, positions in millimetres. The
coordinate system is ``RAS`` or ``LPS`` by name (Slicer 4.11 and later) or a
numeric code (Slicer 4.4 to 4.10: ``0`` RAS, ``1`` LPS; ``2``, IJK, is
refused). A file without a coordinate-system line is RAS, as Slicer reads it.
Fields follow CSV quoting (a label with a comma is quoted, ``""`` is a quote).
Files without a version line (Slicer 3's ``label,x,y,z,sel,vis``) are refused.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from edge.errors import PlanError

MAX_FCSV_BYTES = 1024 * 1024  # a landmark file is a few kilobytes
MAX_FCSV_POINTS = 1000
_COLUMNS = 14  # id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
_FIELD_X, _FIELD_LABEL, _FIELD_DESCRIPTION = 1, 11, 12
_CODES = {"0": "RAS", "1": "LPS", "RAS": "RAS", "LPS": "LPS"}


def read_fcsv(path: Path, rel: str) -> dict[str, Any]:
    """The ``.fcsv`` at ``path`` as a markups document (``{"markups": [...]}``, one
    markup of control points with ``label`` and ``position`` in mm).

    Raises PlanError, one line naming ``rel``, for an unreadable, oversized or
    malformed file, an unknown coordinate system or a row that is not a point.
    """
    fix = "save the landmarks again from 3D Slicer's Markups module"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FCSV_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"cannot read markups {rel}: {exc.strerror or exc}", fix) from None
    if len(data) > MAX_FCSV_BYTES:
        raise PlanError(
            f"markups {rel} is over {MAX_FCSV_BYTES // 1024} KiB", "a landmark file is a few KiB"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlanError(f"markups {rel} is not UTF-8 text", fix) from None
    if "\x00" in text:
        raise PlanError(f"markups {rel} holds a NUL byte: not a text file", fix)
    version = None
    system = "RAS"  # Slicer's default when the header names none
    rows: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep:
                continue
            if key == "markups fiducial file version":
                version = value
            elif key == "coordinatesystem":
                if value.upper() not in _CODES:
                    raise PlanError(
                        f"markups {rel} line {number}: unknown CoordinateSystem {value!r}",
                        "save it from 3D Slicer in RAS or LPS",
                    )
                system = _CODES[value.upper()]
        elif line.strip():
            if len(rows) >= MAX_FCSV_POINTS:
                raise PlanError(
                    f"markups {rel} has more than {MAX_FCSV_POINTS} points",
                    "keep the named landmarks only",
                )
            rows.append(line)
    if version is None:
        raise PlanError(
            f"markups {rel} has no '# Markups fiducial file version' line "
            "(not a Slicer 4 or later .fcsv)",
            fix,
        )
    points = [_point(fields, rel) for fields in csv.reader(rows, strict=False)]
    return {
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "controlPoints": points,
            }
        ]
    }


def _point(fields: list[str], rel: str) -> dict[str, Any]:
    where = f"markups {rel}: point {fields[0]!r}" if fields else f"markups {rel}: a point"
    if len(fields) > _COLUMNS:
        raise PlanError(
            f"{where} has {len(fields)} fields, Slicer writes {_COLUMNS}",
            "save the landmarks again from 3D Slicer (a label with a comma must be quoted)",
        )
    if len(fields) <= _FIELD_LABEL:
        raise PlanError(f"{where} has no label field", "name every point in 3D Slicer")
    try:
        position = [float(v) for v in fields[_FIELD_X : _FIELD_X + 3]]
    except ValueError:
        raise PlanError(
            f"{where}: x, y, z are not numbers", "save it again from 3D Slicer"
        ) from None
    point: dict[str, Any] = {"label": fields[_FIELD_LABEL], "position": position}
    if len(fields) > _FIELD_DESCRIPTION and fields[_FIELD_DESCRIPTION]:
        # Kept so that the markups checks see it (no personal data in descriptions).
        point["description"] = fields[_FIELD_DESCRIPTION]
    return point

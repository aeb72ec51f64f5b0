"""What a plan's JSON files may hold: every key at every depth, by allowlist.

``plan.json`` (:data:`PLAN_SCHEMA`) and the 3D Slicer markups file
(:data:`MARKUPS_SCHEMA`) are checked against a schema before anything in them
is used: a key the schema does not list is refused wherever it is, so a field
that could carry personal data (``PatientsName``, ``telephone`` inside a
target) cannot ride along. Names and texts are checked for what identifies a
person (dates, phone and ID numbers, e-mail addresses) and for length; the
refusal names the field, never its value (the line goes to logs and the audit
log). Counts of entries are bounded by the ``[plan]`` limits. Every problem is a
:class:`PlanError`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from edge.config import PlanConfig
from edge.errors import PlanError


class Leaf(enum.Enum):
    """A value that holds no object: how its strings are checked."""

    NAME = "name"  # a name or label: max_name_chars, personal-data patterns
    FILE = "file"  # a file name in the plan folder: as NAME
    TEXT = "text"  # free text: max_text_chars, personal-data patterns
    VALUE = "value"  # numbers, flags, enumerations: max_text_chars, personal-data patterns
    CODE = "code"  # coded terminology (DICOM/SNOMED triplets): max_text_chars only


@dataclass(frozen=True)
class Items:
    """A list whose items all follow ``item``; at most ``PlanConfig.<limit>`` of them."""

    item: Any
    limit: str = ""


_POINT = Leaf.VALUE

# plan.json, schema edge-plan/1 (docs/plan-format.md); the writer is edge/plan/write.py.
PLAN_SCHEMA: dict[str, Any] = {
    "schema": Leaf.VALUE,
    "case_id": Leaf.NAME,
    "units": Leaf.VALUE,
    "coordinate_system": Leaf.VALUE,
    "skin": Leaf.FILE,
    "landmarks": Leaf.FILE,
    "targets": Items({"name": Leaf.NAME, "position": _POINT}, "max_targets"),
    "trajectories": Items({"name": Leaf.NAME, "entry": _POINT, "target": _POINT}, "max_targets"),
    "cut_planes": Items(
        {"name": Leaf.NAME, "point": _POINT, "normal": _POINT, "points": _POINT}, "max_targets"
    ),
    "structures": Items(
        {"name": Leaf.NAME, "mesh": Leaf.FILE, "color": Leaf.VALUE}, "max_structures"
    ),
    "description": Leaf.TEXT,
}

# The 3D Slicer markups file (.mrk.json, markups schema v1.0.3/v1.0.4) as Slicer writes a
# point list. The edge reads type, coordinateSystem, coordinateUnits and each control
# point's label, position and positionStatus; the other keys Slicer writes are allowed by
# name here and ignored. Keys of other markup types (planes, ROIs, curves) are not.
_SLICER_DISPLAY_KEYS = (
    "visibility",
    "opacity",
    "normalVisibility",
    "normalOpacity",
    "color",
    "selectedColor",
    "activeColor",
    "propertiesLabelVisibility",
    "pointLabelsVisibility",
    "textScale",
    "glyphType",
    "glyphScale",
    "glyphSize",
    "useGlyphScale",
    "sliceProjection",
    "sliceProjectionUseFiducialColor",
    "sliceProjectionOutlinedBehindSlicePlane",
    "sliceProjectionColor",
    "sliceProjectionOpacity",
    "lineThickness",
    "lineColorFadingStart",
    "lineColorFadingEnd",
    "lineColorFadingSaturation",
    "lineColorFadingHueOffset",
    "handlesInteractive",
    "translationHandleVisibility",
    "rotationHandleVisibility",
    "scaleHandleVisibility",
    "interactionHandleScale",
    "snapMode",
)
_CONTROL_POINT: dict[str, Any] = {
    "id": Leaf.VALUE,
    "label": Leaf.NAME,
    "description": Leaf.TEXT,
    "associatedNodeID": Leaf.VALUE,
    "position": _POINT,
    "orientation": Leaf.VALUE,
    "selected": Leaf.VALUE,
    "locked": Leaf.VALUE,
    "visibility": Leaf.VALUE,
    "positionStatus": Leaf.VALUE,
}
_MEASUREMENT: dict[str, Any] = {
    "name": Leaf.NAME,
    "enabled": Leaf.VALUE,
    "value": Leaf.VALUE,
    "units": Leaf.VALUE,
    "description": Leaf.TEXT,
    "printFormat": Leaf.VALUE,
    "quantityCode": Leaf.CODE,
    "derivationCode": Leaf.CODE,
    "methodCode": Leaf.CODE,
    "controlPointValues": Leaf.VALUE,
}
_MARKUP: dict[str, Any] = {
    "type": Leaf.VALUE,
    "name": Leaf.NAME,
    "coordinateSystem": Leaf.VALUE,
    "coordinateUnits": Leaf.VALUE,
    "locked": Leaf.VALUE,
    "fixedNumberOfControlPoints": Leaf.VALUE,
    "labelFormat": Leaf.VALUE,
    "lastUsedControlPointNumber": Leaf.VALUE,
    "controlPoints": Items(_CONTROL_POINT, "max_landmarks"),
    "measurements": Items(_MEASUREMENT, "max_landmarks"),
    "display": dict.fromkeys(_SLICER_DISPLAY_KEYS, Leaf.VALUE),
}
MARKUPS_SCHEMA: dict[str, Any] = {
    "@schema": Leaf.VALUE,
    "markups": Items(_MARKUP, "max_landmarks"),
}

# ------------------------------------------------------------------ personal data in text

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_ORDINAL = r"(?:st|nd|rd|th)?"
# (what it is, pattern); the first that matches is named in the refusal.
_PERSONAL: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("an e-mail address", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
        ("a date", r"(?<!\d)\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)"),  # 1970-01-01
        ("a date", r"(?<!\d)\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})(?!\d)"),  # 01/02/1970
        # 1 Jan 1970, 01-JAN-1970, 1st of January 70
        (
            "a date",
            rf"(?<![a-z\d])\d{{1,2}}{_ORDINAL}(?:\s+of)?[\s.,/-]*{_MONTH}\.?[\s.,/-]*\d{{2,4}}(?!\d)",
        ),
        # Jan 1, 1970
        ("a date", rf"(?<![a-z]){_MONTH}\.?\s*\d{{1,2}}{_ORDINAL},?\s+\d{{4}}(?!\d)"),
        ("a date", r"(?<!\d)(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"),
        ("a phone number", r"(?:\+|(?<!\d)00)\d[\d ()./-]{6,}\d"),  # +44 20 7946 0958
        ("a phone number", r"\(\d{3}\)\s?\d{3}[-. ]\d{4}(?!\d)"),  # (555) 123-4567
        ("a phone number", r"(?<!\d)\d{3}\.\d{3}\.\d{4}(?!\d)"),  # 555.123.4567
        # NHS numbers (10 digits), SSNs (123-45-6789), record numbers: 7+ digits in a row,
        # alone or grouped by single spaces or hyphens.
        ("an ID or phone number", r"\d(?:[ -]?\d){6,}"),
    )
)


def personal_data(text: str) -> str | None:
    """What in ``text`` would identify a person (``"a date"``, ...), or None."""
    for kind, pattern in _PERSONAL:
        if pattern.search(text):
            return kind
    return None


_NO_PERSONAL_DATA = (
    "remove it: a plan must not identify the patient (no dates, phone or ID numbers, "
    "e-mail addresses); the pseudonymous case_id identifies the case"
)


def _show(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    def __init__(self, file: str, limits: PlanConfig) -> None:
        self.file = file
        self.limits = limits

    def node(self, value: Any, spec: Any, where: str) -> None:
        if isinstance(spec, dict):
            self.obj(value, spec, where)
        elif isinstance(spec, Items):
            self.items(value, spec, where)
        else:
            self.leaf(value, spec, where)

    def obj(self, value: Any, spec: dict[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            raise PlanError(f"{self.file}: {where or 'the file'} must be a JSON object", "fix it")
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in spec:
                raise PlanError(
                    f"{self.file}: unknown field '{_show(path)}' (a plan holds only the fields "
                    "docs/plan-format.md lists, and no personal data)",
                    "remove it; valid fields here are " + ", ".join(sorted(spec)),
                )
            self.node(item, spec[key], path)

    def items(self, value: Any, spec: Items, where: str) -> None:
        if not isinstance(value, list):
            raise PlanError(f"{self.file}: '{where}' must be a list", "fix it")
        if spec.limit:
            limit = getattr(self.limits, spec.limit)
            if len(value) > limit:
                raise PlanError(
                    f"{self.file}: '{where}' has {len(value)} entries; the limit is "
                    f"plan.{spec.limit} = {limit}",
                    f"remove entries, or raise plan.{spec.limit} in the configuration",
                )
        for i, item in enumerate(value):
            self.node(item, spec.item, f"{where}[{i}]")

    def leaf(self, value: Any, kind: Leaf, where: str) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                raise PlanError(f"{self.file}: '{where}' must not hold an object", "fix it")
            if isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, str):
                self.text(v, kind, where)

    def text(self, text: str, kind: Leaf, where: str) -> None:
        short = kind in (Leaf.NAME, Leaf.FILE)
        key = "max_name_chars" if short else "max_text_chars"
        limit = getattr(self.limits, key)
        if len(text) > limit:
            raise PlanError(
                f"{self.file}: '{where}' is {len(text)} characters long; the limit is "
                f"plan.{key} = {limit}",
                f"shorten it, or raise plan.{key} in the configuration",
            )
        if kind is not Leaf.CODE:
            found = personal_data(text)
            if found is not None:
                raise PlanError(
                    f"{self.file}: '{where}' looks like it holds personal data ({found})",
                    _NO_PERSONAL_DATA,
                )


def check_document(doc: Any, schema: dict[str, Any], file: str, limits: PlanConfig) -> None:
    """Refuse ``doc`` (a parsed JSON file named ``file``) unless it keeps to ``schema``.

    Every key must be in the schema at its place; list lengths, name and text
    lengths are within ``limits``; no name or text looks like personal data.
    Types of the fields the loader reads are checked by the loader.
    """
    _Checker(file, limits).node(doc, schema, "")

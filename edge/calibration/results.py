"""Calibration result files: one versioned, human-readable JSON file per device, kind and size.

Layout (see calibration/devices/README.md)::

    calibration/devices/<serial>/<kind>-<W>x<H>.json   # kinds tied to an image size
    calibration/devices/<serial>/<kind>.json           # e.g. pivot (no image)
    calibration/devices/<serial>/history/...           # earlier results, never deleted
    calibration/devices/<serial>/inputs/...            # captured data a result was computed from

The edge process calls :func:`find_calibration`, which says which file it
uses and returns a warning for the HUD when the calibration is stale, belongs
to another resolution, or is missing or unreadable; it never falls back silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.errors import CalibrationError
from edge.files import read_json, write_atomic

SCHEMA = "edge.calibration/1"
KINDS = ("intrinsics", "depth-check", "handeye", "spaam", "pivot")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_record(path: str | Path, role: str = "input") -> dict[str, str]:
    """Provenance of one input file: its path as given, role and SHA-256."""
    return {"path": str(path), "role": role, "sha256": file_sha256(path)}


@dataclass
class CalibrationResult:
    """One calibration: parameters and errors, plus when, by which software, from what data."""

    kind: str
    serial: str
    width: int | None
    height: int | None
    parameters: dict[str, Any]
    errors: dict[str, Any]
    inputs: list[dict[str, str]] = field(default_factory=list)
    created_utc: str = field(default_factory=lambda: utc_now().isoformat())
    software_version: str = __version__
    warnings: list[str] = field(default_factory=list)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CalibrationError(
                f"unknown calibration kind {self.kind!r}", "use one of " + ", ".join(KINDS)
            )
        check_serial(self.serial)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else ""

    @property
    def created(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created_utc)

    def file_name(self) -> str:
        return f"{self.kind}-{self.size}.json" if self.size else f"{self.kind}.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind,
            "serial": self.serial,
            "width": self.width,
            "height": self.height,
            "created_utc": self.created_utc,
            "software_version": self.software_version,
            "parameters": self.parameters,
            "errors": self.errors,
            "warnings": self.warnings,
            "inputs": self.inputs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "<dict>") -> CalibrationResult:
        if d.get("schema") != SCHEMA:
            raise CalibrationError(
                f"{where} is not a calibration result of schema {SCHEMA} "
                f"(schema {d.get('schema')!r})",
                "recalibrate with this version of edge",
            )
        try:
            return cls(
                kind=str(d["kind"]),
                serial=str(d["serial"]),
                width=None if d.get("width") is None else int(d["width"]),
                height=None if d.get("height") is None else int(d["height"]),
                parameters=dict(d["parameters"]),
                errors=dict(d["errors"]),
                inputs=list(d.get("inputs", [])),
                created_utc=str(d["created_utc"]),
                software_version=str(d["software_version"]),
                warnings=list(d.get("warnings", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"{where} is not a valid calibration result ({exc!r})", "recalibrate"
            ) from None


def check_serial(serial: str) -> str:
    if not _SERIAL_RE.match(serial):
        raise CalibrationError(
            f"device serial {serial!r} cannot name a folder",
            "use letters, digits, '.', '_' or '-' (pass --serial)",
        )
    return serial


def result_path(devices_dir: str | Path, result: CalibrationResult) -> Path:
    return Path(devices_dir) / result.serial / result.file_name()


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON (indented, human-readable) without leaving a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_result(result: CalibrationResult, devices_dir: str | Path) -> Path:
    """Write the result; an earlier one for the same device/kind/size moves to history/."""
    path = result_path(devices_dir, result)
    if path.exists():
        try:
            old = load_result(path)
            stamp = old.created.strftime("%Y%m%dT%H%M%SZ")
        except CalibrationError:
            stamp = "unreadable-" + utc_now().strftime("%Y%m%dT%H%M%SZ")
        history = path.parent / "history"
        history.mkdir(parents=True, exist_ok=True)
        os.replace(path, history / f"{path.stem}.{stamp}.json")
    return write_json_atomic(path, result.to_dict())


def load_result(path: str | Path) -> CalibrationResult:
    """Read one result file; CalibrationError when it is missing or not a result."""
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise CalibrationError(
            f"calibration file {path} does not exist", "check the path"
        ) from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(
            f"calibration file {path} is unreadable: {exc}", "recalibrate this device"
        ) from None
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration file {path} is not a JSON object", "recalibrate")
    return CalibrationResult.from_dict(data, str(path))


@dataclass(frozen=True)
class CalibrationLookup:
    """What :func:`find_calibration` found: the result (or None), a log line, a HUD warning."""

    result: CalibrationResult | None
    path: Path | None
    message: str
    warning: str | None = None


def find_calibration(
    serial: str,
    width: int | None,
    height: int | None,
    kind: str,
    devices_dir: str | Path,
    max_age_days: float = 90.0,
    now: dt.datetime | None = None,
) -> CalibrationLookup:
    """The calibration of ``kind`` for this device at this size, and a warning if it is not usable.

    Returns the result with a warning when it is stale (older than
    ``max_age_days``); no result and a warning when none matches (naming the
    sizes that do exist) or the file is unreadable or belongs to another device.
    """
    now = now or utc_now()
    folder = Path(devices_dir) / serial
    name = f"{kind}-{width}x{height}.json" if width and height else f"{kind}.json"
    path = folder / name
    if not path.exists():
        others = sorted(p.name for p in folder.glob(f"{kind}*.json")) if folder.is_dir() else []
        if others:
            warning = (
                f"{kind} calibration for {serial} is for {', '.join(others)}, not "
                f"{width}x{height}: recalibrate at this resolution"
            )
        else:
            warning = f"no {kind} calibration for device {serial}: calibrate it (edge calibrate)"
        return CalibrationLookup(None, None, f"not using a {kind} calibration: {warning}", warning)
    try:
        result = load_result(path)
    except CalibrationError as exc:
        return CalibrationLookup(None, path, f"not using {path}: {exc}", str(exc))
    if (
        result.serial != serial
        or result.kind != kind
        or (result.width, result.height)
        != (
            width,
            height,
        )
    ):
        warning = (
            f"{path} holds a {result.kind} calibration of {result.serial} at {result.size or '-'}, "
            f"not {serial} at {width}x{height}: recalibrate"
        )
        return CalibrationLookup(None, path, f"not using {path}: {warning}", warning)
    age_days = (now - result.created).total_seconds() / 86400.0
    message = (
        f"using {kind} calibration {path} from {result.created_utc} "
        f"(edge {result.software_version})"
    )
    if age_days > max_age_days:
        warning = (
            f"{kind} calibration of {serial} is {age_days:.0f} days old (limit {max_age_days:g}): "
            "re-check it"
        )
        return CalibrationLookup(result, path, message + f"; STALE: {warning}", warning)
    return CalibrationLookup(result, path, message)

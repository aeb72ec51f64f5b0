"""The environment the tests run in is exactly what uv.lock pins (scripts/dev.sh installs it
with ``uv sync --locked``), so a pass here is a pass with the locked versions."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from edge.files import tomllib


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(repo_root: Path) -> dict[str, set[str]]:
    lock = tomllib.loads((repo_root / "uv.lock").read_text(encoding="utf-8"))
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return versions


def test_every_installed_distribution_is_the_locked_version(repo_root: Path) -> None:
    locked = _locked(repo_root)
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions(path=sys.path)
        if d.metadata["Name"]
    }
    not_locked = sorted(n for n in installed if n not in locked)
    other_version = sorted(
        f"{n} {v} (lock: {', '.join(sorted(locked[n]))})"
        for n, v in installed.items()
        if n in locked and v not in locked[n]
    )
    assert not not_locked, f"installed but not in uv.lock: {not_locked}"
    assert not other_version, f"installed at another version than uv.lock: {other_version}"
    # The suite's own tools are among them: these are the versions it passed with.
    for name in ("pytest", "numpy", "pyzmq", "onnxruntime", "opencv-python-headless"):
        assert name in installed, f"{name} is not installed"

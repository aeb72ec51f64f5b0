"""Fixtures of the tracking tests: the built models."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.models import ensure_models
from edge.models.manifest import repo_models_dir


@pytest.fixture(scope="module")
def models_dir() -> Path:
    ensure_models(repo_models_dir() / "build")
    return repo_models_dir() / "build"

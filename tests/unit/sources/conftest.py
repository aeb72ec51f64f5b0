"""Fixtures shared by the phantom's tests: the face model, built once per session."""

from __future__ import annotations

import pytest

from edge.config import TrackingConfig
from edge.models import ensure_models
from edge.models.manifest import repo_models_dir
from edge.sources.phantom import tracker_landmarks
from edge.sources.phantom.face import FaceModel, load_face_model


@pytest.fixture(scope="session")
def face(tmp_path_factory: pytest.TempPathFactory) -> FaceModel:
    models = repo_models_dir() / "build"
    ensure_models(models)
    cache = tmp_path_factory.mktemp("phantom-cache")
    return load_face_model(
        None, lambda: tracker_landmarks(TrackingConfig(models_dir=str(models))), cache
    )

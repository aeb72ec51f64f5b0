"""The ONNX face models: manifest, build from the pinned MediaPipe wheel, verification.

Use :func:`verified_model_path` before opening a model,
:func:`require_models` at process start (verifies, never builds: rebuilding
is an explicit ``edge models fetch``) and :func:`ensure_models` where
fetching on first use is wanted (the tests, the benchmarks). All raise
:class:`edge.errors.ModelError` on a missing or tampered model.
"""

from edge.models.fetch import (
    check_model_io,
    ensure_models,
    fetch_models,
    require_models,
    source_file,
    verified_model_path,
    verified_source_path,
    verify_models,
)
from edge.models.manifest import (
    InputSpec,
    Manifest,
    ModelSpec,
    OutputSpec,
    default_manifest_path,
    load_manifest,
)

__all__ = [
    "InputSpec",
    "Manifest",
    "ModelSpec",
    "OutputSpec",
    "check_model_io",
    "default_manifest_path",
    "ensure_models",
    "fetch_models",
    "load_manifest",
    "require_models",
    "source_file",
    "verified_model_path",
    "verified_source_path",
    "verify_models",
]

"""Fetch, build and verify the ONNX models named in the manifest.

The only network access is ``python -m pip download`` of the pinned wheel;
everything after that is local and checked by SHA-256: the wheel, each source
``.tflite`` inside it, and each ONNX file the converter writes. Files are
written to a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a half-written model.

Heavy imports (onnx, tflite) stay inside the functions that need them, so the
no-op path of ``edge models fetch`` (everything present and matching) is fast.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from edge.errors import ModelError
from edge.files import write_atomic
from edge.models.manifest import Manifest, ModelSpec, load_manifest

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file (raises OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- checks


def _fix(spec: ModelSpec) -> str:
    return f"run `edge models fetch` to rebuild {spec.file}"


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be hashed (missing, not a file, unreadable), or None."""
    if not path.exists():
        return f"model {path} is missing"
    if not path.is_file():
        return f"model {path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"model {path} is unreadable (permission denied)"
    return None


def _digest_problem(path: Path, expected: str) -> str | None:
    """Why ``path`` fails its SHA-256 ``expected`` (missing, unreadable, wrong bytes), or None."""
    problem = _file_problem(path)
    if problem is not None:
        return problem
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return f"model {path} is unreadable ({exc.strerror or exc})"
    if digest != expected:
        return f"model {path} has SHA-256 {digest[:12]}..., the manifest says {expected[:12]}..."
    return None


def checksum_problem(spec: ModelSpec, models_dir: Path) -> str | None:
    """Why the model file fails its checksum (missing, unreadable, wrong bytes), or None."""
    return _digest_problem(models_dir / spec.file, spec.sha256)


def source_file(spec: ModelSpec) -> str:
    """The name the model's source ``.tflite`` is kept under next to the ONNX file: LiteRT
    runs it (``[tracking] runtime``)."""
    return Path(spec.source_path).name


def source_problem(spec: ModelSpec, models_dir: Path) -> str | None:
    """Why the kept source ``.tflite`` fails its ``source_sha256`` (missing, unreadable,
    wrong bytes), or None."""
    return _digest_problem(models_dir / source_file(spec), spec.source_sha256)


def verified_source_path(
    name: str, models_dir: str | Path, manifest: Manifest | None = None
) -> Path:
    """The path of model ``name``'s source ``.tflite`` after checking its SHA-256 against the
    manifest's ``source_sha256``; raises ModelError naming the file and the fix."""
    manifest = manifest or load_manifest()
    spec = manifest.model(name)
    problem = source_problem(spec, Path(models_dir))
    if problem is not None:
        raise ModelError(problem, f"run `edge models fetch` to extract {source_file(spec)}")
    return Path(models_dir) / source_file(spec)


def check_model_io(spec: ModelSpec, path: Path) -> None:
    """Check that an ONNX file's input and outputs are the manifest's (names, shapes, float32).

    Raises ModelError naming the first difference, or when the file is not ONNX.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(
            f"model {path} is not a readable ONNX file ({type(exc).__name__})", _fix(spec)
        ) from None

    def dims(vi: onnx.ValueInfoProto) -> tuple[int | str, ...]:
        return tuple(
            d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
            for d in vi.type.tensor_type.shape.dim
        )

    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs, the manifest says 1", _fix(spec))
    got = inputs[0]
    want = spec.input
    if got.name != want.name or dims(got) != want.shape or got.type.tensor_type.elem_type != 1:
        raise ModelError(
            f"model {path} input is '{got.name}' {list(dims(got))}, "
            f"the manifest says '{want.name}' {list(want.shape)} float32 {want.layout}",
            _fix(spec),
        )
    outs = {vi.name: vi for vi in model.graph.output}
    for o in spec.outputs:
        if o.name not in outs:
            raise ModelError(
                f"model {path} has no output '{o.name}' (it has {sorted(outs)})", _fix(spec)
            )
        if dims(outs[o.name]) != o.shape or outs[o.name].type.tensor_type.elem_type != 1:
            raise ModelError(
                f"model {path} output '{o.name}' is {list(dims(outs[o.name]))}, "
                f"the manifest says {list(o.shape)} float32",
                _fix(spec),
            )


def verified_model_path(
    name: str, models_dir: str | Path, manifest: Manifest | None = None
) -> Path:
    """The path of model ``name`` after checking it against the manifest.

    Checks presence, readability, input/output names and shapes, and SHA-256.
    Raises ModelError (message names the file and the fix) on any mismatch;
    the edge process calls this before it opens a session.
    """
    manifest = manifest or load_manifest()
    spec = manifest.model(name)
    models_dir = Path(models_dir)
    path = models_dir / spec.file
    problem = _file_problem(path)
    if problem is not None:
        raise ModelError(problem, _fix(spec))
    # The interface first: "input is [1, 256, 128, 3]" says more than a checksum does.
    check_model_io(spec, path)
    problem = checksum_problem(spec, models_dir)
    if problem is not None:
        raise ModelError(problem, _fix(spec))
    return path


def verify_models(models_dir: str | Path, manifest: Manifest | None = None) -> list[Path]:
    """Verify every model in the manifest: their paths, or ModelError on the first problem."""
    manifest = manifest or load_manifest()
    return [verified_model_path(name, models_dir, manifest) for name in manifest.models]


# ----------------------------------------------------------------------------- build


def build_model(spec: ModelSpec, tflite_bytes: bytes) -> bytes:
    """Convert one source ``.tflite`` to the ONNX bytes the manifest describes (deterministic)."""
    from edge.models.rewrite import optimize_for_ort
    from edge.models.tflite2onnx import OutputMap, convert_tflite, serialize

    outputs = [OutputMap(o.tflite_name, o.name, o.shape) for o in spec.outputs]
    model = convert_tflite(tflite_bytes, spec.input.name, outputs, graph_name=spec.key)
    model = optimize_for_ort(model, spec.prelu_form)  # type: ignore[arg-type]
    return serialize(model)


def _download_wheel(manifest: Manifest, cache_dir: Path, quiet: bool, progress: Progress) -> Path:
    src = manifest.source
    cache_dir.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {src.requirement} ({src.wheel}) with pip")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            src.requirement,
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            src.python_version,
            "--platform",
            src.platform,
            "--dest",
            tmp,
            "--disable-pip-version-check",
        ]
        if quiet:
            cmd.append("--quiet")
        try:
            result = subprocess.run(
                cmd,
                stdout=subprocess.PIPE if quiet else None,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise ModelError(
                f"cannot run pip to download {src.requirement}: {exc}",
                "install pip for this Python, or pass --wheel with a downloaded copy",
            ) from None
        if result.returncode != 0:
            tail = (result.stderr or "").strip().splitlines()
            raise ModelError(
                f"pip could not download {src.requirement} ({tail[-1] if tail else 'no message'})",
                "check the package index is reachable, or pass --wheel with a downloaded copy",
            )
        got = Path(tmp) / src.wheel
        if not got.is_file():
            names = sorted(p.name for p in Path(tmp).iterdir())
            raise ModelError(
                f"pip downloaded {names}, not {src.wheel}",
                "check the pinned platform in models/manifest.toml",
            )
        target = cache_dir / src.wheel
        os.replace(got, target)
    return target


def _checked_wheel(path: Path, manifest: Manifest) -> Path:
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ModelError(
            f"cannot read wheel {path}: {exc}", "delete it and run `edge models fetch`"
        ) from None
    if digest != manifest.source.wheel_sha256:
        raise ModelError(
            f"wheel {path} has SHA-256 {digest[:12]}..., "
            f"the manifest pins {manifest.source.wheel_sha256[:12]}...",
            "delete it and run `edge models fetch` to download the pinned wheel again",
        )
    return path


def obtain_wheel(
    manifest: Manifest,
    cache_dir: Path,
    wheel: Path | None = None,
    quiet: bool = False,
    progress: Progress = _silent,
) -> Path:
    """The pinned wheel, checked by SHA-256: ``wheel`` if given, else the cache, else pip."""
    if wheel is not None:
        return _checked_wheel(Path(wheel), manifest)
    cached = cache_dir / manifest.source.wheel
    if cached.is_file():
        if sha256_file(cached) == manifest.source.wheel_sha256:
            progress(f"using cached {cached}")
            return cached
        progress(f"cached {cached} does not match the pinned SHA-256; downloading again")
        cached.unlink()
    return _checked_wheel(_download_wheel(manifest, cache_dir, quiet, progress), manifest)


def extract_source(wheel_path: Path, spec: ModelSpec) -> bytes:
    """The model's ``.tflite`` bytes from the wheel, checked against ``source_sha256``."""
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            data = zf.read(spec.source_path)
    except KeyError:
        raise ModelError(
            f"{wheel_path.name} has no {spec.source_path}",
            "check source_path in models/manifest.toml",
        ) from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"cannot read {wheel_path}: {exc}", "delete it and run `edge models fetch`"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.source_sha256:
        raise ModelError(
            f"{spec.source_path} in {wheel_path.name} has SHA-256 {digest[:12]}..., "
            f"the manifest says {spec.source_sha256[:12]}...",
            "the wheel is not the pinned one; delete it and run `edge models fetch`",
        )
    return data


def fetch_models(
    models_dir: str | Path,
    manifest: Manifest | None = None,
    cache_dir: str | Path | None = None,
    wheel: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    progress: Progress = _silent,
) -> list[str]:
    """Build every model that is missing or does not match; the names of those built.

    Each model's source ``.tflite`` is kept next to it (:func:`source_file`, checked
    against ``source_sha256``), written when it is missing or does not match.

    Idempotent: when every file is present and matches, returns [] after only
    hashing the files. ``cache_dir`` (default ``<models_dir>/../cache``) keeps
    the downloaded wheel so later builds work offline. Raises ModelError when a
    download, a checksum, or the converter fails; nothing half-written is left.
    """
    manifest = manifest or load_manifest()
    models_dir = Path(models_dir)
    cache = Path(cache_dir) if cache_dir is not None else models_dir.parent / "cache"
    todo = [
        spec
        for spec in manifest.models.values()
        if force
        or checksum_problem(spec, models_dir) is not None
        or source_problem(spec, models_dir) is not None
    ]
    if not todo:
        return []
    wheel_path = obtain_wheel(
        manifest, cache, Path(wheel) if wheel else None, quiet=quiet, progress=progress
    )
    built = []
    for spec in todo:
        source = extract_source(wheel_path, spec)  # checked against source_sha256
        if force or source_problem(spec, models_dir) is not None:
            models_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(models_dir / source_file(spec), source)
            progress(f"wrote {models_dir / source_file(spec)} (for LiteRT)")
        if not force and checksum_problem(spec, models_dir) is None:
            continue
        progress(f"converting {spec.source_path} -> {spec.file}")
        data = build_model(spec, source)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelError(
                f"the converter built {spec.file} with SHA-256 {digest}, "
                f"the manifest says {spec.sha256}",
                "if the converter was changed on purpose, put the new SHA-256 in "
                "models/manifest.toml after the parity tests pass",
            )
        models_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(models_dir / spec.file, data)  # world-readable, like any install
        check_model_io(spec, models_dir / spec.file)
        progress(f"wrote {models_dir / spec.file} (SHA-256 {digest[:12]}... verified)")
        built.append(spec.key)
    return built


def require_models(models_dir: str | Path, manifest: Manifest | None = None) -> dict[str, Path]:
    """Verify every model at process start, building none: model name -> verified path.

    A missing model or one whose SHA-256 differs from the manifest raises
    ModelError naming the file, with the fix: the explicit ``edge models
    fetch``. Nothing is written.
    """
    manifest = manifest or load_manifest()
    models_dir = Path(models_dir)
    for spec in manifest.models.values():
        path = models_dir / spec.file
        if not path.exists():
            raise ModelError(f"model {path} is missing", "run `edge models fetch` to build it")
        problem = checksum_problem(spec, models_dir)
        if problem is not None:
            raise ModelError(
                f"{problem}; refusing to start",
                f"run `edge models fetch` to rebuild {spec.file} from the pinned source",
            )
    return {name: verified_model_path(name, models_dir, manifest) for name in manifest.models}


def ensure_models(
    models_dir: str | Path,
    manifest: Manifest | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress = _silent,
) -> dict[str, Path]:
    """Fetch on first use, then verify: model name -> verified path. Raises ModelError.

    For the tests and the benchmarks; the edge process never builds a model
    (:func:`require_models`).
    """
    manifest = manifest or load_manifest()
    fetch_models(models_dir, manifest, cache_dir, quiet=True, progress=progress)
    return {name: verified_model_path(name, models_dir, manifest) for name in manifest.models}

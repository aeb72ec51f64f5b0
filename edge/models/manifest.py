"""The model manifest (``models/manifest.toml``, shipped in the package as
``edge/models/manifest.toml``): what each model is and where it comes from.

The manifest is the contract between the model build and its users: file
names, SHA-256 of each ONNX file and of its source ``.tflite``, the pinned
wheel, and each model's input and outputs. Loading is strict: a missing key or
a wrong type is a :class:`ModelError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config import PACKAGE_MODELS_DIR
from edge.errors import ModelError
from edge.files import read_toml

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def repo_models_dir() -> Path:
    """This installation's models folder: ``build/`` (the ONNX files) and ``cache/`` below it.

    The source checkout's ``models/`` for an editable install, else
    ``<prefix>/share/edge/models`` of the environment the package is installed in
    (:data:`edge.config.PACKAGE_MODELS_DIR`); never the working folder.
    """
    return PACKAGE_MODELS_DIR


def default_manifest_path() -> Path:
    """The manifest shipped in the package (``edge/models/manifest.toml``).

    In the source tree that file is a symbolic link to ``models/manifest.toml``, the
    one file people edit; building the package copies its content into the wheel.
    """
    return Path(__file__).resolve().parent / "manifest.toml"


@dataclass(frozen=True)
class WheelSource:
    """The pinned wheel the source ``.tflite`` files are taken from."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    python_version: str
    platform: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """A model's image input. ``value_range`` is what pixel values 0 and 255 map to."""

    layout: str = "NHWC"
    dtype: str = "float32"
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def height(self) -> int:
        return self.shape[1] if self.layout == "NHWC" else self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[2] if self.layout == "NHWC" else self.shape[3]


@dataclass(frozen=True)
class OutputSpec(TensorSpec):
    tflite_name: str = ""
    meaning: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One model's manifest entry."""

    key: str
    file: str
    sha256: str
    source_path: str
    source_sha256: str
    license: str
    description: str
    prelu_form: str
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    decode: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    source: WheelSource
    models: dict[str, ModelSpec]

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ModelError(
                f"no model named '{name}' in {self.path}",
                f"use one of {', '.join(sorted(self.models))}",
            )
        return self.models[name]


class _Reader:
    """Typed access to one TOML table, with errors that name the key."""

    def __init__(self, table: Any, where: str, path: Path) -> None:
        if not isinstance(table, dict):
            raise ModelError(f"{path}: '{where}' must be a table", "restore models/manifest.toml")
        self.table, self.where, self.path = table, where, path

    def _get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        if key not in self.table:
            raise ModelError(
                f"{self.path}: '{self.where}.{key}' is missing", "restore models/manifest.toml"
            )
        value = self.table[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ModelError(
                f"{self.path}: '{self.where}.{key}' must be {what}, got {value!r}",
                "restore models/manifest.toml",
            )
        return value

    def text(self, key: str) -> str:
        return str(self._get(key, (str,), "a string"))

    def sha(self, key: str) -> str:
        value = self.text(key)
        if not _SHA256.match(value):
            raise ModelError(
                f"{self.path}: '{self.where}.{key}' is not a lowercase SHA-256 hex digest",
                "restore models/manifest.toml",
            )
        return value

    def ints(self, key: str) -> tuple[int, ...]:
        value = self._get(key, (list,), "a list of integers")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise ModelError(
                f"{self.path}: '{self.where}.{key}' must hold positive integers, got {value!r}",
                "restore models/manifest.toml",
            )
        return tuple(value)

    def floats(self, key: str, n: int) -> tuple[float, ...]:
        value = self._get(key, (list,), f"a list of {n} numbers")
        if len(value) != n or not all(isinstance(v, int | float) for v in value):
            raise ModelError(
                f"{self.path}: '{self.where}.{key}' must be {n} numbers, got {value!r}",
                "restore models/manifest.toml",
            )
        return tuple(float(v) for v in value)

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key, (dict,), "a table"), f"{self.where}.{key}", self.path)


def _model(key: str, r: _Reader) -> ModelSpec:
    i = r.sub("input")
    inp = InputSpec(
        name=i.text("name"),
        shape=i.ints("shape"),
        layout=i.text("layout"),
        dtype=i.text("dtype"),
        color=i.text("color"),
        value_range=i.floats("value_range", 2),  # type: ignore[arg-type]
    )
    if inp.layout not in ("NHWC", "NCHW") or len(inp.shape) != 4 or inp.dtype != "float32":
        raise ModelError(
            f"{r.path}: '{r.where}.input' must be a float32 NHWC or NCHW 4-D tensor",
            "restore models/manifest.toml",
        )
    raw_outputs = r._get("outputs", (list,), "a list of tables")
    outputs = []
    for n, table in enumerate(raw_outputs):
        o = _Reader(table, f"{r.where}.outputs[{n}]", r.path)
        outputs.append(
            OutputSpec(
                name=o.text("name"),
                shape=o.ints("shape"),
                tflite_name=o.text("tflite_name"),
                meaning=o.text("meaning"),
            )
        )
    decode = r.table.get("decode", {})
    return ModelSpec(
        key=key,
        file=r.text("file"),
        sha256=r.sha("sha256"),
        source_path=r.text("source_path"),
        source_sha256=r.sha("source_sha256"),
        license=r.text("license"),
        description=r.text("description"),
        prelu_form=r.text("prelu_form"),
        input=inp,
        outputs=tuple(outputs),
        decode=dict(decode) if isinstance(decode, dict) else {},
    )


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and validate the manifest (default: the repository's models/manifest.toml).

    Raises ModelError when it is missing, not TOML, or lacks a key.
    """
    chosen = Path(path) if path is not None else default_manifest_path()
    try:
        data = read_toml(chosen)
    except FileNotFoundError:
        raise ModelError(
            f"model manifest {chosen} does not exist", "restore models/manifest.toml from git"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read model manifest {chosen}: {exc}") from None
    except ValueError as exc:  # too large, not UTF-8, not TOML, nested too deep
        raise ModelError(f"model manifest {chosen}: {exc}", "restore it from git") from None
    top = _Reader(data, "manifest", chosen)
    s = top.sub("source")
    source = WheelSource(
        package=s.text("package"),
        version=s.text("version"),
        wheel=s.text("wheel"),
        wheel_sha256=s.sha("wheel_sha256"),
        python_version=s.text("python_version"),
        platform=s.text("platform"),
        license=s.text("license"),
    )
    models_table = top.sub("models")
    models = {key: _model(key, models_table.sub(key)) for key in models_table.table}
    if not models:
        raise ModelError(f"{chosen} lists no models", "restore models/manifest.toml from git")
    return Manifest(path=chosen, source=source, models=models)

"""Model verification and fetch: missing, tampered, mismatched and unreadable files are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import ModelError
from edge.models import (
    check_model_io,
    ensure_models,
    fetch_models,
    load_manifest,
    verified_model_path,
    verify_models,
)
from edge.models.fetch import obtain_wheel, source_file, verified_source_path
from edge.models.manifest import Manifest, repo_models_dir


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


@pytest.fixture(scope="module")
def built(manifest: Manifest) -> dict[str, Path]:
    return ensure_models(repo_models_dir() / "build", manifest)


@pytest.fixture
def models_copy(tmp_path: Path, built: dict[str, Path]) -> Path:
    """A private copy of the verified models that a test may damage."""
    folder = tmp_path / "build"
    folder.mkdir()
    for path in built.values():
        shutil.copy(path, folder / path.name)
    return folder


def test_verified_models_pass(manifest: Manifest, models_copy: Path) -> None:
    paths = verify_models(models_copy, manifest)
    assert sorted(p.name for p in paths) == sorted(s.file for s in manifest.models.values())


def test_missing_model_is_refused(manifest: Manifest, models_copy: Path) -> None:
    (models_copy / manifest.model("face_landmarks").file).unlink()
    with pytest.raises(ModelError, match=r"face_landmarks.onnx is missing.*edge models fetch"):
        verified_model_path("face_landmarks", models_copy, manifest)


def test_tampered_byte_is_refused(manifest: Manifest, models_copy: Path) -> None:
    path = models_copy / manifest.model("face_detector").file
    import onnx

    data = bytearray(path.read_bytes())
    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = bytes(data).find(weights) + len(weights) // 2
    data[at] ^= 0x01  # one bit of one weight: still valid ONNX, wrong numbers
    path.write_bytes(bytes(data))
    check_model_io(manifest.model("face_detector"), path)  # the interface is intact
    with pytest.raises(ModelError, match=r"SHA-256.*edge models fetch"):
        verified_model_path("face_detector", models_copy, manifest)


def test_model_with_other_input_shape_is_refused(manifest: Manifest, models_copy: Path) -> None:
    import onnx

    path = models_copy / manifest.model("face_detector").file
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 256
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=r"input is 'input' \[1, 256, 128, 3\].*manifest says"):
        verified_model_path("face_detector", models_copy, manifest)


def test_manifest_with_other_interface_is_refused(
    manifest: Manifest, built: dict[str, Path]
) -> None:
    """check_model_io compares the file with the manifest, independent of the checksum."""
    spec = manifest.model("face_landmarks")
    nchw = dataclasses.replace(spec.input, shape=(1, 3, 192, 192), layout="NCHW")
    with pytest.raises(ModelError, match=r"manifest says 'input' \[1, 3, 192, 192\]"):
        check_model_io(dataclasses.replace(spec, input=nchw), built["face_landmarks"])
    renamed = (dataclasses.replace(spec.outputs[0], name="mesh"), spec.outputs[1])
    with pytest.raises(ModelError, match=r"no output 'mesh'"):
        check_model_io(dataclasses.replace(spec, outputs=renamed), built["face_landmarks"])
    reshaped = (dataclasses.replace(spec.outputs[0], shape=(1, 468, 3)), spec.outputs[1])
    with pytest.raises(ModelError, match=r"output 'landmarks' is \[1, 1404\]"):
        check_model_io(dataclasses.replace(spec, outputs=reshaped), built["face_landmarks"])


def test_unreadable_model_is_refused(manifest: Manifest, models_copy: Path) -> None:
    path = models_copy / manifest.model("face_detector").file
    path.unlink()
    path.mkdir()  # something that exists but cannot be read as a file (root ignores chmod)
    with pytest.raises(ModelError, match=r"not a regular file"):
        verified_model_path("face_detector", models_copy, manifest)


def test_truncated_model_is_refused_as_not_onnx(manifest: Manifest, models_copy: Path) -> None:
    path = models_copy / manifest.model("face_landmarks").file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"not a readable ONNX file"):
        verified_model_path("face_landmarks", models_copy, manifest)


def test_verify_command_exit_codes(
    manifest: Manifest, models_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "verify", "--dir", str(models_copy)]) == 0
    (models_copy / manifest.model("face_detector").file).write_bytes(b"not a model")
    assert main(["models", "verify", "--dir", str(models_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "face_detector.onnx" in err[0] and "edge models fetch" in err[0]


def test_fetch_builds_missing_models_then_is_a_no_op(
    manifest: Manifest, tmp_path: Path, built: dict[str, Path]
) -> None:
    folder = tmp_path / "fresh"
    cache = repo_models_dir() / "cache"  # the wheel cached by the session's ensure_models
    messages: list[str] = []
    assert sorted(fetch_models(folder, manifest, cache, progress=messages.append)) == sorted(
        manifest.models
    )
    assert any("converting" in m for m in messages)
    verify_models(folder, manifest)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [s.file for s in manifest.models.values()]
        + [source_file(s) for s in manifest.models.values()]
    ), "no temporary files are left behind"
    for name in manifest.models:  # the sources LiteRT runs, checked
        assert verified_source_path(name, folder, manifest).suffix == ".tflite"
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert fetch_models(folder, manifest, cache) == []
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_fetch_repairs_a_tampered_model(manifest: Manifest, models_copy: Path) -> None:
    path = models_copy / manifest.model("face_detector").file
    path.write_bytes(b"tampered")
    assert fetch_models(models_copy, manifest, repo_models_dir() / "cache") == ["face_detector"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest.model("face_detector").sha256


def test_a_tampered_tflite_source_is_refused_then_repaired(
    manifest: Manifest, models_copy: Path
) -> None:
    spec = manifest.model("face_landmarks")
    fetch_models(models_copy, manifest, repo_models_dir() / "cache")
    source = models_copy / source_file(spec)
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    source.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"face_landmark.tflite has SHA-256.*edge models fetch"):
        verified_source_path("face_landmarks", models_copy, manifest)
    assert fetch_models(models_copy, manifest, repo_models_dir() / "cache") == []  # ONNX fine
    assert verified_source_path("face_landmarks", models_copy, manifest) == source


def test_fetch_quiet_no_op_prints_nothing(
    models_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "fetch", "--quiet", "--dir", str(models_copy)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_wrong_wheel_is_refused(manifest: Manifest, tmp_path: Path) -> None:
    fake = tmp_path / manifest.source.wheel
    fake.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: right name, wrong bytes
    with pytest.raises(ModelError, match=r"wheel .* SHA-256"):
        obtain_wheel(manifest, tmp_path / "cache", wheel=fake)
    with pytest.raises(ModelError, match=r"wheel .* SHA-256"):
        fetch_models(tmp_path / "build", manifest, tmp_path / "cache", wheel=fake)
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())


def test_corrupt_cached_wheel_is_replaced_not_trusted(
    manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached wheel with the wrong bytes is discarded, never used."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / manifest.source.wheel).write_bytes(b"junk")
    # No index and an empty local folder make pip fail fast, offline (the child inherits these).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"pip could not download mediapipe==0.10.21"):
        obtain_wheel(manifest, cache, quiet=True)
    assert not (cache / manifest.source.wheel).exists()


def test_manifest_errors_name_the_key(tmp_path: Path) -> None:
    text = load_manifest().path.read_text(encoding="utf-8")
    bad = tmp_path / "manifest.toml"
    bad.write_text(text.replace('wheel_sha256 = "', 'wheel_sha256 = "X'), encoding="utf-8")
    with pytest.raises(ModelError, match=r"source.wheel_sha256"):
        load_manifest(bad)
    bad.write_text(text.replace('file = "face_detector.onnx"\n', ""), encoding="utf-8")
    with pytest.raises(ModelError, match=r"models.face_detector.file' is missing"):
        load_manifest(bad)
    with pytest.raises(ModelError, match=r"does not exist"):
        load_manifest(tmp_path / "nothing.toml")
    with pytest.raises(ModelError, match=r"no model named 'eyes'"):
        load_manifest().model("eyes")

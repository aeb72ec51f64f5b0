"""Models verified at start: `edge run` refuses a missing or tampered model (and audits it),
never builds one, and the models folder comes from the package, not the working folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.audit import verify_log
from edge.cli import main
from edge.config import EdgeConfig, PhantomConfig, TrackingConfig
from edge.keys import generate_device_key, load_device_verify_key
from edge.models import ensure_models, load_manifest
from edge.models.manifest import Manifest, repo_models_dir


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


@pytest.fixture(scope="module")
def built(manifest: Manifest) -> Path:
    ensure_models(repo_models_dir() / "build", manifest)
    return repo_models_dir() / "build"


@pytest.fixture
def models_copy(tmp_path: Path, built: Path, manifest: Manifest) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for spec in manifest.models.values():
        shutil.copy(built / spec.file, folder / spec.file)
    return folder


def _config(tmp_path: Path, models_dir: Path, audit: bool) -> tuple[Path, Path]:
    """A configuration file using ``models_dir`` (and a signed audit log when asked)."""
    text = f'[tracking]\nmodels_dir = "{models_dir.as_posix()}"\n'
    key_pub = tmp_path / "none.pub"
    if audit:
        key = generate_device_key(tmp_path / "device")
        key_pub = key.public
        text += (
            f'[audit]\nenabled = true\npath = "{(tmp_path / "audit.jsonl").as_posix()}"\n'
            f'device_key = "{Path(key.private).as_posix()}"\n'
        )
    cfg = tmp_path / "edge.toml"
    cfg.write_text(text)
    return cfg, Path(key_pub)


def _run(cfg: Path) -> int:
    return main(["run", "--config", str(cfg), "--frames", "1", "--no-publish", "-q"])


def test_default_models_folder_is_the_packages_not_the_working_folder():
    assert Path(TrackingConfig().models_dir) == repo_models_dir() / "build"
    assert Path(TrackingConfig().models_dir).is_absolute()
    assert Path(PhantomConfig().cache_dir).is_absolute()
    assert Path(EdgeConfig().phantom.cache_dir).parent == repo_models_dir() / "build"


def test_tampered_model_is_refused_and_audited(tmp_path, models_copy, manifest, capsys):
    spec = manifest.model("face_landmarks")
    target = models_copy / spec.file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    cfg, pub = _config(tmp_path, models_copy, audit=True)

    assert _run(cfg) == 2
    # One error line (the audit log's own INFO lines for the journal may come before it).
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("edge: error:")]
    assert len(errors) == 1
    err = errors[0]
    assert str(target) in err and "SHA-256" in err and "edge models fetch" in err
    assert target.read_bytes() == bytes(data)  # refused, not silently rebuilt

    log = tmp_path / "audit.jsonl"
    report = verify_log(log, load_device_verify_key(pub))
    assert report.ok, report.problem
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [e for e in entries if e["event"] == "model.refused"]
    assert len(refused) == 1
    assert str(target) in refused[0]["data"]["reason"]
    assert "edge models fetch" in refused[0]["data"]["fix"]
    assert not [e for e in entries if e["event"] == "process.start"]


def test_missing_model_is_refused_with_the_fetch_hint(tmp_path, models_copy, manifest, capsys):
    spec = manifest.model("face_detector")
    (models_copy / spec.file).unlink()
    cfg, _ = _config(tmp_path, models_copy, audit=False)

    assert _run(cfg) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{models_copy / spec.file} is missing" in err
    assert "run `edge models fetch`" in err
    assert not (models_copy / spec.file).exists()  # nothing built on the way
    assert not (tmp_path / "cache").exists()  # and no wheel fetched


def test_edge_track_works_from_another_working_folder(tmp_path, built, monkeypatch, capsys):
    from matplotlib import cbook

    photo = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["track", photo, "--json"]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert len(faces) == 1
    assert not (tmp_path / "models").exists()


def test_edge_run_elsewhere_creates_no_models_folder(tmp_path, built, monkeypatch, capsys):
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--frames", "2", "--no-publish", "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 2
    assert not (tmp_path / "models").exists()

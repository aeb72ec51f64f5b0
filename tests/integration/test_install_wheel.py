"""A regular (non-editable) install: the wheel carries the model manifest, and the models
folder defaults to the environment's share/edge/models, never the working folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_CONFIG", "PYTHONPATH")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the project installed from a freshly built wheel."""
    uv = repo_root / ".tools" / "uv" / "bin" / "uv"
    if not uv.is_file():
        pytest.skip("the pinned uv is not installed (scripts/dev.sh setup installs it)")
    root = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy of what the build reads, so no stale build/ folder leaks in.
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy2(repo_root / name, src / name)
    (src / "models").mkdir()
    shutil.copy2(repo_root / "models" / "manifest.toml", src / "models" / "manifest.toml")
    shutil.copytree(
        repo_root / "edge",
        src / "edge",
        symlinks=True,  # edge/models/manifest.toml links to models/manifest.toml
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    built = _run([str(uv), "build", "--wheel", "--offline", "-o", str(root / "dist")], src)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((root / "dist").glob("*.whl"))

    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = ["pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)]
    added = _run([str(uv), *install], root)
    assert added.returncode == 0, added.stderr[-2000:]
    # The dependencies come from the test environment, after the new venv's own packages
    # (a path line in a .pth file: the editable install's finder there is not run).
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = _run([str(python), "-c", purelib], root)
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_ships_the_manifest_and_uses_its_own_models_folder(
    installed: Path, repo_root: Path, tmp_path: Path
) -> None:
    edge = str(installed / "bin" / "edge")
    python = str(installed / "bin" / "python")
    where = _run([python, "-c", "import edge; print(edge.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout + where.stderr

    # The manifest comes from the package; the checkout's built models match it.
    ok = _run([edge, "models", "verify", "--dir", str(repo_root / "models" / "build")], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok ") == 2

    shown = _run([edge, "config", "show", "--json"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    models_dir = Path(json.loads(shown.stdout)["tracking.models_dir"]["value"])
    assert models_dir == installed / "share" / "edge" / "models" / "build"

    # Nothing built there yet: one line naming that folder (not the working folder).
    missing = _run([edge, "models", "verify"], tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert str(models_dir) in missing.stderr and "edge models fetch" in missing.stderr
    assert not (tmp_path / "models").exists()

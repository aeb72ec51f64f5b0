"""edge/jit.py: a kernel compiles for its signature, with or without a disk cache, and a
damaged cache never stops a start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.jit import c_array, kernel

MODULE = """
from edge.jit import kernel

@kernel("float64(float64[::1])")
def total(a):
    s = 0.0
    for x in a:
        s += x
    return s

print(total(__import__("numpy").arange(4.0)))
"""


def test_a_kernel_without_a_cache_location_still_compiles_and_says_so(caplog):
    # Code with no source file (as from exec) has no cache location at all.
    namespace: dict[str, object] = {}
    exec("def total(a):\n    s = 0.0\n    for x in a:\n        s += x\n    return s\n", namespace)
    with caplog.at_level(logging.WARNING, logger="edge.jit"):
        total = kernel("float64(float64[::1])")(namespace["total"])
    assert total(np.arange(5.0)) == 10.0
    assert "compiled in memory" in caplog.text


def test_a_kernel_refuses_arguments_outside_its_signature():
    namespace: dict[str, object] = {}
    exec("def first(a):\n    return a[0]\n", namespace)
    first = kernel("float64(float64[::1])")(namespace["first"])
    assert first(np.array([2.5])) == 2.5
    with pytest.raises(TypeError):  # no second compilation for another type
        first(np.array([1, 2]))
    # What callers pass: read-only or strided arrays become C-contiguous and writable.
    frozen = np.arange(6.0)[::2]
    frozen.flags.writeable = False
    assert first(c_array(frozen)) == 0.0 and c_array(frozen).flags.writeable


def _import(folder: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(folder)}
    return subprocess.run(
        [sys.executable, "-c", "import tiny_kernel"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_service_cache_is_per_source_and_a_damaged_one_only_costs_a_compilation(tmp_path):
    (tmp_path / "tiny_kernel.py").write_text(MODULE)
    cache = tmp_path / "cache"
    first = _import(tmp_path, cache)
    assert first.returncode == 0 and first.stdout.strip() == "6.0", first.stderr
    (tag,) = [p for p in cache.iterdir() if p.is_dir()]  # one folder for this source
    index = list(tag.rglob("*.nbi"))
    assert index, "nothing was cached"
    for path in index:
        path.write_bytes(b"")  # as a power cut might leave it
    damaged = _import(tmp_path, cache)
    assert damaged.returncode == 0 and damaged.stdout.strip() == "6.0", damaged.stderr
    assert "compiled in memory" in damaged.stderr and "Traceback" not in damaged.stderr
    # Other source: another folder, never the machine code cached for the old one.
    (tmp_path / "tiny_kernel.py").write_text(MODULE.replace("s += x", "s += 2 * x"))
    changed = _import(tmp_path, cache)
    assert changed.returncode == 0 and changed.stdout.strip() == "12.0", changed.stderr
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2

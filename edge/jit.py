"""Compiled per-frame kernels: numba, nopython mode, the interpreter lock released.

The frame's work outside the landmark model is many small array operations (ICP
iterations, the cloud, the checks, the ray cast); in numpy each is a call with its
own overhead, and each holds the interpreter lock, so a second thread cannot run
beside it (docs/benchmark.md). A kernel here is one compiled loop instead.

Every kernel is compiled for one explicit signature when its module is imported
(so no frame ever waits for the compiler) and cached on disk: in
``$NUMBA_CACHE_DIR/<tag>`` when that variable is set (the systemd unit sets it to
the service's cache directory), else next to the source when that is writable,
else in the user's cache. ``<tag>`` is a hash of the kernel's source file and of
this file, so an upgrade never runs machine code cached for other source or
other compiler options (numba itself checks only the file's time and size). A
cache that cannot be read or written (damaged by a power cut, a full disk, no
writable place) costs a compilation in memory with a warning, never a start.

Kernels use numpy's error model (a division by zero gives inf or NaN, as numpy
would), no fast-math and no bounds checks: the Python function that calls a
kernel checks shapes, and passes C-contiguous arrays of the signature's types
(:func:`c_array`; a signature that declares an array read-only, as for a frame's
images, takes a read-only one as it is).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

log = logging.getLogger(__name__)

# Set by the service (systemd/edge.service); kernels are cached in a folder per source.
CACHE_ROOT = os.environ.get("NUMBA_CACHE_DIR", "")


def c_array(a: Any, dtype: Any = np.float64) -> np.ndarray:
    """``a`` as a C-contiguous, writable array of ``dtype`` (a copy only when needed:
    an explicit signature refuses strided arrays, and read-only ones unless it says
    ``readonly``)."""
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


@functools.cache
def _cache_tag(source: str | None) -> str:
    """The cache folder of a kernel source: a hash of it and of this file."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    if source is not None:
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def kernel(signature: str) -> Callable[[Callable[..., Any]], Any]:
    """Compile ``fn`` for ``signature`` now (numba's nopython mode, no GIL held)."""

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            if CACHE_ROOT:  # read when numba picks the cache location, per kernel
                tag = _cache_tag(inspect.getsourcefile(fn))
                numba.config.CACHE_DIR = os.path.join(CACHE_ROOT, tag)  # type: ignore[attr-defined]
            return numba.njit(signature, cache=True, nogil=True, error_model="numpy")(fn)
        except Exception as exc:  # no cache location, or one that cannot be read or written
            log.warning(
                "kernel %s compiled in memory, its disk cache failed (%s: %s); if this "
                "repeats at every start, empty the kernel cache folder",
                fn.__qualname__,
                type(exc).__name__,
                exc,
            )
            return numba.njit(signature, cache=False, nogil=True, error_model="numpy")(fn)

    return compile_

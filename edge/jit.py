"""Compiled per-frame kernels: numba, nopython mode, the interpreter lock released.

The frame's work outside the landmark model is many small array operations (ICP
iterations, the cloud, the checks, the ray cast); in numpy each is a call with its
own overhead, and each holds the interpreter lock, so a second thread cannot run
beside it (docs/benchmark.md). A kernel here is one compiled loop instead.

Every kernel is compiled for one explicit signature when its module is imported
(so no frame ever waits for the compiler) and cached on disk: next to the source
when that is writable, else in ``$NUMBA_CACHE_DIR`` (the systemd unit sets it to
the service's cache directory). Where no cache can be written at all the kernel
is compiled in memory, with a warning, and works the same.

Kernels use numpy's error model (a division by zero gives inf or NaN, as numpy
would) and no fast-math, so their results do not depend on the machine's vector
width.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba

log = logging.getLogger(__name__)


def kernel(signature: str) -> Callable[[Callable[..., Any]], Any]:
    """Compile ``fn`` for ``signature`` now (numba's nopython mode, no GIL held)."""

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(signature, cache=True, nogil=True, error_model="numpy")(fn)
        except RuntimeError as exc:  # no writable cache location for this file
            log.warning("%s compiled without a disk cache: %s", fn.__qualname__, exc)
            return numba.njit(signature, cache=False, nogil=True, error_model="numpy")(fn)

    return compile_

"""edge/jit.py: a kernel compiles for its signature, with or without a disk cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.jit import kernel


def test_a_kernel_without_a_cache_location_still_compiles_and_says_so(caplog):
    # Code with no source file (as from exec) has no cache location at all.
    namespace: dict[str, object] = {}
    exec("def total(a):\n    s = 0.0\n    for x in a:\n        s += x\n    return s\n", namespace)
    with caplog.at_level(logging.WARNING, logger="edge.jit"):
        total = kernel("float64(float64[::1])")(namespace["total"])
    assert total(np.arange(5.0)) == 10.0
    assert "compiled without a disk cache" in caplog.text


def test_a_kernel_refuses_arguments_outside_its_signature():
    namespace: dict[str, object] = {}
    exec("def first(a):\n    return a[0]\n", namespace)
    first = kernel("float64(float64[::1])")(namespace["first"])
    assert first(np.array([2.5])) == 2.5
    with pytest.raises(TypeError):  # no second compilation for another type
        first(np.array([1, 2]))

"""SSD anchors of BlazeFace (short range), as MediaPipe's SsdAnchorsCalculator makes them.

Options of ``face_detection_short_range``: 128x128 input, four layers with
strides 8, 16, 16, 16, one aspect ratio plus the interpolated one (2 anchors
per layer and cell), anchor offset 0.5, fixed anchor size. Consecutive layers
with the same stride share a grid, so the 16x16 grid carries 2 anchors per
cell and the 8x8 grid 6: 512 + 384 = 896 anchors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHORT_RANGE_STRIDES = (8, 16, 16, 16)


def ssd_anchors(
    input_size: int = 128,
    strides: Sequence[int] = SHORT_RANGE_STRIDES,
    anchors_per_layer: int = 2,
    offset: float = 0.5,
) -> np.ndarray:
    """Anchor centres (N, 2) as x, y normalised to [0, 1] of the input tensor.

    With a fixed anchor size every anchor's width and height are 1, so only the
    centres are returned.
    """
    if input_size <= 0 or any(s <= 0 for s in strides):
        raise ValueError("input size and strides must be positive")
    centres = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        repeats = 0
        while i < len(strides) and strides[i] == stride:
            repeats += anchors_per_layer
            i += 1
        cells = int(np.ceil(input_size / stride))
        y, x = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(x + offset) / cells, (y + offset) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)

"""Recordings with and without librealsense's frame compression play back the same pixels."""

import numpy as np

from edge.config import EdgeConfig
from edge.sources import open_source, parse_source_spec
from edge.sources.recording import Recorder, RecordingSource


def test_uncompressed_and_compressed_recordings_are_pixel_exact(tmp_path):
    with open_source(parse_source_spec("synthetic"), EdgeConfig(), frames=6, seed=3) as src:
        frames = list(src)
    sizes = {}
    for compress in (True, False):
        out = tmp_path / f"c{int(compress)}.db3"
        with Recorder(out, fps=30.0, compress=compress) as rec:
            for f in frames:
                rec.write(f)
        with RecordingSource(out) as played:
            back = list(played)
        assert len(back) == len(frames)
        for a, b in zip(frames, back, strict=True):
            np.testing.assert_array_equal(a.color, b.color)
            np.testing.assert_array_equal(a.depth, b.depth)
        sizes[compress] = out.stat().st_size
    assert sizes[False] > sizes[True]

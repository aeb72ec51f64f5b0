"""Frame sources: live RealSense, recorded sessions, synthetic scenes and the phantom.

:func:`open_source` turns the ``--source`` option of every command into a
:class:`~edge.frames.FrameSource`. Heavy imports (pyrealsense2) happen inside
the sources, when they are opened.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge.config import EdgeConfig
from edge.errors import SourceError
from edge.frames import FrameSource, TimingMode

SOURCE_FORMS = (
    "realsense",
    "realsense:SERIAL",
    "FILE.db3",
    "FILE.bag",
    "synthetic",
    "phantom",
    "phantom:SCENARIO",
)


def open_source(
    spec: str,
    config: EdgeConfig,
    *,
    frames: int | None = None,
    timing: TimingMode = TimingMode.DETERMINISTIC,
    seed: int = 0,
) -> FrameSource:
    """Build (not open) the source named by ``spec``.

    ``frames`` sets the length of a synthetic or phantom source (default 60
    for synthetic); recordings and cameras ignore it (the caller stops
    reading). Raises SourceError for an unknown form, listing the valid ones.
    """
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "realsense":
        from edge.sources.realsense import RealSenseSource

        return RealSenseSource(config.realsense, serial=arg or None)
    if Path(spec).suffix.lower() in (".db3", ".bag"):
        from edge.sources.recording import RecordingSource

        return RecordingSource(spec, timing=timing)
    if spec == "synthetic":
        from edge.sources.synthetic import SyntheticSource

        rs = config.realsense
        return SyntheticSource(
            frames if frames is not None else 60,
            seed=seed,
            width=rs.width,
            height=rs.height,
            fps=float(rs.fps),
            timing=timing,
        )
    if kind == "phantom":
        try:
            module = importlib.import_module("edge.sources.phantom")
        except ImportError as exc:
            raise SourceError(
                f"the phantom source cannot be loaded ({exc})",
                "use --source synthetic or a recording",
            ) from None
        phantom_cls = getattr(module, "PhantomSource", None)
        if phantom_cls is None:
            raise SourceError(
                "the phantom source is not available in this build",
                "use --source synthetic or a recording",
            )
        kwargs: dict[str, object] = {"seed": seed}
        if frames is not None:
            kwargs["frames"] = frames
        if arg:
            kwargs["scenario"] = arg
        phantom_config = getattr(config, "phantom", None)
        if phantom_config is not None:
            kwargs["config"] = phantom_config
        kwargs["tracking"] = config.tracking  # the phantom's face is found with these models
        source: FrameSource = phantom_cls(**kwargs)
        return source
    raise SourceError(f"unknown source '{spec}'", "use one of: " + ", ".join(SOURCE_FORMS))

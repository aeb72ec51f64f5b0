"""Frame sources: live RealSense, recorded sessions, synthetic scenes and the phantom.

A source is chosen by its typed configuration, :class:`~edge.config.SourceConfig`
(the ``[source]`` section): :func:`open_source` looks its ``kind`` up in
:data:`FACTORIES`. The ``--source`` option's text forms (:data:`SOURCE_FORMS`)
are parsed once, by :func:`parse_source_spec`, into that same type;
:func:`format_source_spec` writes one back as text for logs and the audit log.
Heavy imports (pyrealsense2, the phantom's renderer) happen inside the
factories, when a source of that kind is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from edge.config import EdgeConfig, SourceConfig
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
SYNTHETIC_FRAMES = 60  # length of a synthetic source when the caller gives none


def _unknown(text: str) -> SourceError:
    return SourceError(f"unknown source '{text}'", "use one of: " + ", ".join(SOURCE_FORMS))


def _is_recording_path(text: str) -> bool:
    from edge.sources.recording.index import RECORDING_SUFFIXES

    return Path(text).suffix.lower() in RECORDING_SUFFIXES


def parse_source_spec(text: str) -> SourceConfig:
    """Parse a ``--source`` value (one of :data:`SOURCE_FORMS`) into a :class:`SourceConfig`.

    Surrounding whitespace is ignored. ``realsense:`` comes first, so a camera
    serial is never taken for a file; any other text ending in ``.db3`` or
    ``.bag`` (any case) is a recording path. Raises SourceError for anything
    else, listing the valid forms.
    """
    spec = text.strip()
    kind, _, arg = spec.partition(":")
    if kind == "realsense":
        return SourceConfig(kind="realsense", serial=arg)
    if _is_recording_path(spec):
        return SourceConfig(kind="recording", path=spec)
    if spec == "synthetic":
        return SourceConfig(kind="synthetic")
    if kind == "phantom":
        return SourceConfig(kind="phantom", scenario=arg)
    raise _unknown(spec)


def format_source_spec(source: SourceConfig) -> str:
    """The ``--source`` text that :func:`parse_source_spec` reads back as ``source``."""
    if source.kind == "recording":
        return source.path
    detail = {"realsense": source.serial, "phantom": source.scenario}.get(source.kind, "")
    return f"{source.kind}:{detail}" if detail else source.kind


class SourceFactory(Protocol):
    """Builds (does not open) a source of one kind from its configuration.

    ``frames`` is the length of a generated source (None: its default);
    ``timing`` and ``seed`` apply where the kind has them.
    """

    def __call__(
        self,
        source: SourceConfig,
        config: EdgeConfig,
        *,
        frames: int | None,
        timing: TimingMode,
        seed: int,
    ) -> FrameSource: ...


def _realsense(
    source: SourceConfig, config: EdgeConfig, *, frames: int | None, timing: TimingMode, seed: int
) -> FrameSource:
    from edge.sources.realsense import RealSenseSource

    return RealSenseSource(config.realsense, serial=source.serial or None)


def _recording(
    source: SourceConfig, config: EdgeConfig, *, frames: int | None, timing: TimingMode, seed: int
) -> FrameSource:
    # Refused here, as the --source text would be, rather than later on open.
    if not _is_recording_path(source.path):
        raise _unknown(source.path)
    from edge.sources.recording import RecordingSource

    return RecordingSource(source.path, timing=timing)


def _synthetic(
    source: SourceConfig, config: EdgeConfig, *, frames: int | None, timing: TimingMode, seed: int
) -> FrameSource:
    from edge.sources.synthetic import SyntheticSource

    rs = config.realsense
    return SyntheticSource(
        frames if frames is not None else SYNTHETIC_FRAMES,
        seed=seed,
        width=rs.width,
        height=rs.height,
        fps=float(rs.fps),
        timing=timing,
    )


def _phantom(
    source: SourceConfig, config: EdgeConfig, *, frames: int | None, timing: TimingMode, seed: int
) -> FrameSource:
    try:
        from edge.sources.phantom import PhantomSource
    except ImportError as exc:  # its rendering dependencies are missing from this install
        raise SourceError(
            f"the phantom source cannot be loaded ({exc})",
            "use --source synthetic or a recording",
        ) from None
    kwargs: dict[str, Any] = {
        "seed": seed,
        "config": config.phantom,
        "timing": timing,
        "tracking": config.tracking,  # the phantom's face is found with these models
        "tools_dir": config.tools.dir,  # the tool scenarios' tool definitions
    }
    # Only what was asked for: the phantom's own defaults (frames, scenario) apply otherwise.
    if frames is not None:
        kwargs["frames"] = frames
    if source.scenario:
        kwargs["scenario"] = source.scenario
    return PhantomSource(**kwargs)


FACTORIES: dict[str, SourceFactory] = {
    "realsense": _realsense,
    "recording": _recording,
    "synthetic": _synthetic,
    "phantom": _phantom,
}


def open_source(
    source: SourceConfig,
    config: EdgeConfig,
    *,
    frames: int | None = None,
    timing: TimingMode = TimingMode.DETERMINISTIC,
    seed: int = 0,
) -> FrameSource:
    """Build (not open) the source ``source`` describes, with ``config``'s camera and phantom.

    ``frames`` sets the length of a synthetic or phantom source (default 60
    for synthetic, the scenario's for the phantom); recordings and cameras
    ignore it (the caller stops reading). ``timing`` paces recordings and
    generated sources (:mod:`edge.sources.pacing`); ``seed`` seeds generated
    ones. Raises SourceError for an unknown kind or a recording path that is
    not a ``.db3``/``.bag`` file.
    """
    factory = FACTORIES.get(source.kind)
    if factory is None:
        raise SourceError(
            f"unknown source kind '{source.kind}'", "use one of: " + ", ".join(FACTORIES)
        )
    return factory(source, config, frames=frames, timing=timing, seed=seed)

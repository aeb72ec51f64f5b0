"""The frame flow, wired in one place: source -> tracking -> registration -> overlay -> transport.

A stage is a small object with a ``name`` and one ``process(result)`` method
that reads what earlier stages put on the :class:`FrameResult` and adds its
own part. The pipeline times every stage; stages never time themselves. A
stage that raises on one frame does not stop the process: the frame is marked
failed (so nothing downstream can pass it off as current) and the next frame
is processed.

Source faults the loop survives: a live source that has no frame right now
(:class:`edge.errors.FrameTimeout`, e.g. the camera was unplugged
and is reconnecting) is a *gap*: stages with a ``source_gap()`` method are
told (they forget what they were tracking) and the loop keeps going. A frame
whose number is not above the last one processed (out of order, duplicate)
is dropped before any stage sees it, so filters never see time run
backwards; a frame older than ``late_after_s`` when it arrives is processed
and marked ``late``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edge.errors import FrameTimeout
from edge.frames import Frame, FrameSource

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.plan.model import Plan

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """Everything known about one frame as it moves through the stages."""

    frame: Frame
    tracking: Any = None  # edge.tracking: faces and 2-D/3-D landmarks
    registration: Any = None  # edge.registration: pose, state and quality
    overlay: Any = None  # edge.overlay: what the display draws
    published: bool = False
    errors: list[str] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)
    received_s: float = 0.0  # host monotonic time the pipeline got the frame
    done_s: float = 0.0
    late: bool = False  # older than the pipeline's late_after_s when it arrived

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def end_to_end_ms(self) -> float:
        """From the frame's host capture timestamp to the end of the last stage."""
        return (self.done_s - self.frame.host_timestamp_s) * 1000.0


class Stage(Protocol):
    name: str

    def process(self, result: FrameResult) -> None: ...


class Pipeline:
    """Runs frames from one source through a fixed list of stages.

    ``late_after_s``: a frame older than this (host capture time to arrival)
    is marked late (default 0.1 s, the headsets' reference staleness limit).
    Counters: ``stale_frames`` (dropped as out of order or duplicate),
    ``late_frames``, ``source_gaps`` (reads that found no frame).
    """

    def __init__(
        self,
        source: FrameSource,
        stages: Iterable[Stage],
        clock: Callable[[], float] = time.perf_counter,
        late_after_s: float = 0.1,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self._clock = clock
        self.late_after_s = late_after_s
        self.stale_frames = 0
        self.late_frames = 0
        self.source_gaps = 0
        self._last_number: int | None = None

    def process(self, frame: Frame, source_ms: float | None = None) -> FrameResult:
        """Run one frame through every stage; ``source_ms`` is how long reading it took."""
        result = FrameResult(frame=frame, received_s=time.monotonic())
        result.late = result.received_s - frame.host_timestamp_s > self.late_after_s
        if result.late:
            self.late_frames += 1
        if source_ms is not None:
            result.stage_ms["source"] = source_ms
        for stage in self.stages:
            start = self._clock()
            try:
                stage.process(result)
            except Exception as exc:  # one bad frame must not stop the edge process
                log.exception(
                    "stage %s failed on frame %d",
                    stage.name,
                    frame.number,
                    extra={"stage": stage.name, "frame": frame.number},
                )
                result.errors.append(f"{stage.name}: {type(exc).__name__}: {exc}")
            finally:
                result.stage_ms[stage.name] = (self._clock() - start) * 1000.0
        result.done_s = time.monotonic()
        return result

    def in_order(self, frame: Frame) -> bool:
        """False (and counted) for a frame not newer than the last one accepted."""
        if self._last_number is not None and frame.number <= self._last_number:
            self.stale_frames += 1
            log.debug("frame %d dropped: not after frame %d", frame.number, self._last_number)
            return False
        self._last_number = frame.number
        return True

    def source_gap(self, reason: str) -> None:
        """Tell the stages that frames stopped (each forgets what it was tracking)."""
        self.source_gaps += 1
        for stage in self.stages:
            hook = getattr(stage, "source_gap", None)
            if hook is None:
                continue
            try:
                hook(reason)
            except Exception:  # a gap handler must not stop the edge process either
                log.exception(
                    "stage %s failed handling a source gap", stage.name, extra={"stage": stage.name}
                )

    def run(
        self,
        max_frames: int | None = None,
        on_result: Callable[[FrameResult], bool | None] | None = None,
        on_gap: Callable[[str], bool | None] | None = None,
    ) -> int:
        """Process frames until the source ends, ``max_frames`` or a callback returns False.

        ``on_gap(reason)`` is called whenever a live source has no frame (see
        the module docstring), so the caller can keep its watchdog and stop
        requests going while a camera is away. Returns the number of frames
        processed. The source is opened and closed here.
        """
        count = 0
        with self.source:
            while max_frames is None or count < max_frames:
                start = self._clock()
                try:
                    frame = self.source.read()
                except FrameTimeout as exc:
                    self.source_gap(exc.problem)
                    if on_gap is not None and on_gap(exc.problem) is False:
                        break
                    continue
                if frame is None:
                    break
                if not self.in_order(frame):
                    continue
                result = self.process(frame, (self._clock() - start) * 1000.0)
                count += 1
                if on_result is not None and on_result(result) is False:
                    break
        return count


def compose(
    config: EdgeConfig,
    source: FrameSource,
    *,
    plan: Plan | None = None,
    publish: Stage | None = None,
    tracker: Any = None,
    warnings: tuple[str, ...] = (),
) -> Pipeline:
    """The edge process's pipeline: source -> tracking -> registration -> overlay -> transport.

    Without a plan there is nothing to register or draw: only tracking runs,
    and the publish stage sends no overlay (its heartbeat says why).
    ``tracker`` replaces the face tracker built from ``config.tracking``
    (tests inject one). ``warnings`` (e.g. a stale calibration) go on every
    frame's HUD.
    """
    from edge.tracking.tracker import FaceTracker, TrackingStage

    stages: list[Stage] = [TrackingStage(tracker or FaceTracker.from_config(config.tracking))]
    if plan is not None:
        from edge.overlay.project import DisplayProfile
        from edge.overlay.stage import OverlayStage
        from edge.registration.stage import RegistrationStage

        stages.append(RegistrationStage(plan, config.registration))
        name = config.overlay.display_profile
        profile = DisplayProfile.from_file(name) if name else None
        stages.append(OverlayStage(plan, profile, config.overlay, warnings=warnings))
    if publish is not None:
        stages.append(publish)
    return Pipeline(source, stages)

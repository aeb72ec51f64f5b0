"""The frame flow, wired in one place: source -> tracking -> registration -> overlay -> transport.

A stage is a small object with a ``name`` and one ``process(result)`` method
that reads what earlier stages put on the :class:`FrameResult` and adds its
own part. The pipeline times every stage; stages never time themselves. A
stage that raises on one frame does not stop the process: the frame is marked
failed (so nothing downstream can pass it off as current) and the next frame
is processed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

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
    """Runs frames from one source through a fixed list of stages."""

    def __init__(
        self,
        source: FrameSource,
        stages: Iterable[Stage],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self._clock = clock

    def process(self, frame: Frame, source_ms: float | None = None) -> FrameResult:
        """Run one frame through every stage; ``source_ms`` is how long reading it took."""
        result = FrameResult(frame=frame, received_s=time.monotonic())
        if source_ms is not None:
            result.stage_ms["source"] = source_ms
        for stage in self.stages:
            start = self._clock()
            try:
                stage.process(result)
            except Exception as exc:  # one bad frame must not stop the edge process
                log.exception("stage %s failed on frame %d", stage.name, frame.number)
                result.errors.append(f"{stage.name}: {type(exc).__name__}: {exc}")
            finally:
                result.stage_ms[stage.name] = (self._clock() - start) * 1000.0
        result.done_s = time.monotonic()
        return result

    def run(
        self,
        max_frames: int | None = None,
        on_result: Callable[[FrameResult], bool | None] | None = None,
    ) -> int:
        """Process frames until the source ends, ``max_frames`` or ``on_result`` returns False.

        Returns the number of frames processed. The source is opened and closed here.
        """
        count = 0
        with self.source:
            while max_frames is None or count < max_frames:
                start = self._clock()
                frame = self.source.read()
                if frame is None:
                    break
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
) -> Pipeline:
    """The edge process's pipeline: source -> tracking -> registration -> overlay -> transport.

    Without a plan there is nothing to register or draw: only tracking runs
    (and nothing is published). ``tracker`` replaces the face tracker built
    from ``config.tracking`` (tests inject one).
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
        stages.append(OverlayStage(plan, profile, config.overlay))
        if publish is not None:
            stages.append(publish)
    return Pipeline(source, stages)

"""Reference video see-through viewer: draws the streamed overlay on the preview video.

It is what a headset developer can compare their own client with: it shows
the state in words, hides any overlay older than ``stale_after_ms`` behind a
"STALE" warning, draws non-current primitives (DEGRADED, REGISTERED) in amber
and draws nothing but the warning when the edge says LOST or SEARCHING.
With ``predict`` it draws a current overlay where the patient is at the
moment it draws, extrapolated with the pose's velocity (docs/protocol.md,
"Pose prediction"), as a headset draws for its display time.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import TransportError
from edge.registration.types import RegistrationState
from edge.transport.client import Received, Subscriber, SubscriberStats
from edge.transport.prediction import predict_points
from edge.transport.protocol import (
    TOPIC_HUD,
    TOPIC_OVERLAY,
    TOPIC_STATUS,
    TOPIC_TOOLS,
    TOPIC_VIDEO,
)

log = logging.getLogger(__name__)

GREEN = (80, 220, 80)  # BGR
AMBER = (0, 170, 255)
RED = (40, 40, 230)
WHITE = (255, 255, 255)
DEFAULT_SIZE = (640, 480)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return text.replace("—", "-").encode("ascii", "replace").decode("ascii")


class Viewer:
    """Renders the newest state of a :class:`Subscriber` into BGR images."""

    def __init__(
        self, subscriber: Subscriber, *, stale_after_ms: float = 100.0, predict: bool = False
    ) -> None:
        if stale_after_ms <= 0:
            raise TransportError("stale age must be positive", "pass --stale-ms > 0")
        self.sub = subscriber
        self.predict = predict
        self.predicted_frames = 0
        self.stale_after_s = stale_after_ms / 1000.0
        self._video_seq = -1
        self._video: np.ndarray | None = None
        self.stale_frames = 0
        self.drawn_frames = 0

    def _size(self, overlay: Received | None) -> tuple[int, int]:
        if overlay is not None:
            d = overlay.message.payload.get("display", {})
            w, h = d.get("width", 0), d.get("height", 0)
            if isinstance(w, int) and isinstance(h, int) and 0 < w <= 8192 and 0 < h <= 8192:
                return w, h
        if self._video is not None:
            return self._video.shape[1], self._video.shape[0]
        return DEFAULT_SIZE

    def _background(self, size: tuple[int, int]) -> np.ndarray:
        import cv2

        video = self.sub.latest(TOPIC_VIDEO)
        if video is not None and video.message.header.seq != self._video_seq:
            self._video_seq = video.message.header.seq
            image = cv2.imdecode(video.message.arrays["jpeg"], cv2.IMREAD_COLOR)
            if image is None:
                log.warning("undecodable JPEG in video frame %d", video.message.header.frame)
            else:
                self._video = image
        if self._video is None:
            return np.zeros((size[1], size[0], 3), np.uint8)
        if (self._video.shape[1], self._video.shape[0]) != size:
            return cv2.resize(self._video, size, interpolation=cv2.INTER_LINEAR)
        return self._video.copy()

    def render(self, now_unix_s: float | None = None) -> np.ndarray:
        """One BGR image of the display as the surgeon would see it now."""
        import cv2

        now = time.time() if now_unix_s is None else now_unix_s
        overlay = self.sub.latest(TOPIC_OVERLAY)
        size = self._size(overlay)
        canvas = self._background(size)
        font = cv2.FONT_HERSHEY_SIMPLEX
        if overlay is None or overlay.age_s(now) > self.stale_after_s:
            self.stale_frames += 1
            age = "no overlay" if overlay is None else f"{overlay.age_s(now) * 1000:.0f} ms old"
            cv2.rectangle(canvas, (0, 0), (size[0] - 1, 44), RED, -1)
            cv2.putText(canvas, f"STALE ({age})", (10, 32), font, 1.0, WHITE, 2, cv2.LINE_AA)
            status = self.sub.latest(TOPIC_STATUS)
            if status is not None:
                sp = status.message.payload
                line = f"edge {sp['state']}, up {sp['uptime_s']:.0f} s"
                cv2.putText(canvas, _ascii(line), (10, size[1] - 12), font, 0.5, WHITE, 1)
            return canvas
        arrays = overlay.message.arrays
        if self.predict:
            moved = predicted_arrays(overlay, now)
            self.predicted_frames += moved is not arrays
            arrays = moved
        draw_overlay(canvas, overlay.message.payload, arrays)
        self.drawn_frames += 1
        hud = self.sub.latest(TOPIC_HUD)
        if hud is not None and hud.message.header.frame == overlay.message.header.frame:
            h = hud.message.payload
            age_ms = overlay.age_s(now) * 1000
            line = f"{h['fps']:.0f} fps  latency {h['latency_ms']:.0f} ms  age {age_ms:.0f} ms"
            cv2.putText(canvas, line, (10, size[1] - 12), font, 0.5, WHITE, 1, cv2.LINE_AA)
        tools = self.sub.latest(TOPIC_TOOLS)
        if tools is not None and tools.message.header.frame == overlay.message.header.frame:
            draw_tools(canvas, tools.message.payload, tools.message.arrays)
        return canvas

    @staticmethod
    def _draw_primitives(
        canvas: np.ndarray, payload: dict[str, Any], arrays: dict[str, np.ndarray], color: Any
    ) -> None:
        import cv2

        def pt(p: np.ndarray) -> tuple[int, int] | None:
            if not np.all(np.isfinite(p)) or np.any(np.abs(p) > 1e5):
                return None
            return round(float(p[0])), round(float(p[1]))

        for seg in arrays.get("trajectories_px", np.zeros((0, 2, 2))):
            a, b = pt(seg[0]), pt(seg[1])
            if a and b:
                cv2.line(canvas, a, b, color, 2, cv2.LINE_AA)
        for i, p in enumerate(arrays.get("targets_px", np.zeros((0, 2)))):
            c = pt(p)
            if c is None:
                continue
            cv2.circle(canvas, c, 7, color, 2, cv2.LINE_AA)
            cv2.drawMarker(canvas, c, color, cv2.MARKER_CROSS, 10, 1)
            t = payload["targets"][i]
            depth = t.get("skin_distance_mm")
            label = str(t["name"]) + (
                f" {depth:.0f} mm" if isinstance(depth, float) and math.isfinite(depth) else ""
            )
            cv2.putText(
                canvas,
                _ascii(label),
                (c[0] + 10, c[1] - 8),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                color,
                1,
            )


def predicted_arrays(overlay: Received, display_unix_s: float) -> dict[str, np.ndarray]:
    """The overlay's arrays with its targets and trajectories moved to ``display_unix_s``.

    The camera-frame points are extrapolated with the pose's velocity
    (:meth:`Received.predicted_targets_camera_m`); their pixels move by the
    displacement of their projection with the display's intrinsics (exact
    when the display is the camera, as for this viewer over the camera's
    video). The arrays as sent when the overlay has no velocity.
    """
    arrays = overlay.message.arrays
    velocity = overlay.velocity()
    if velocity is None:
        return arrays
    d = overlay.message.payload["display"]
    f = np.array([float(d["fx"]), float(d["fy"])])
    c = np.array([float(d["ppx"]), float(d["ppy"])])
    if not np.all(f > 0):
        return arrays
    dt = overlay.prediction_horizon_s(display_unix_s)

    def shift(points_m: np.ndarray, px: np.ndarray) -> np.ndarray:
        flat = points_m.reshape(-1, 3)
        moved = predict_points(flat, velocity, dt)
        with np.errstate(divide="ignore", invalid="ignore"):
            before = flat[:, :2] / flat[:, 2:3] * f + c
            after = moved[:, :2] / moved[:, 2:3] * f + c
        return px + (after - before).reshape(px.shape)

    out = dict(arrays)
    if "targets_camera_m" in arrays and "targets_px" in arrays:
        out["targets_px"] = shift(arrays["targets_camera_m"], arrays["targets_px"])
    if "trajectories_camera_m" in arrays and "trajectories_px" in arrays:
        out["trajectories_px"] = shift(arrays["trajectories_camera_m"], arrays["trajectories_px"])
    return out


def check_window_support() -> None:
    """Raise TransportError when this OpenCV build cannot open windows (the headless build)."""
    import cv2

    try:
        cv2.namedWindow("edge view", cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        raise TransportError(
            "this OpenCV build has no window support (opencv-python-headless)",
            "write a video with --out FILE.mp4 instead of --window",
        ) from None


class Mp4Sink:
    """Writes BGR frames to an mp4 (mp4v) through a temporary file, replaced on close."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise TransportError(f"{self.path} does not end in .mp4", "pass --out NAME.mp4")
        self._tmp = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.fps = fps
        self._writer: Any = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(
                str(self._tmp), fourcc, self.fps, (image.shape[1], image.shape[0])
            )
            if not self._writer.isOpened():
                raise TransportError(f"cannot write video {self._tmp}", "check the folder")
            self._size = (image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != self._size:
            import cv2 as _cv2

            image = _cv2.resize(image, self._size)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)


def run_view(
    subscriber: Subscriber,
    *,
    frames: int | None,
    fps: float,
    stale_after_ms: float,
    sink: Callable[[np.ndarray], None],
    duration_s: float | None = None,
    idle_end_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    predict: bool = False,
) -> Viewer:
    """Render at ``fps`` until ``frames`` images or ``duration_s`` have passed, the edge has
    sent nothing for ``idle_end_s`` after it was first heard (it stopped), or ``should_stop()``.
    """
    viewer = Viewer(subscriber, stale_after_ms=stale_after_ms, predict=predict)
    interval = 1.0 / fps
    start = time.monotonic()
    next_s = start
    heard_s: float | None = None
    count = 0
    while (frames is None or count < frames) and not should_stop():
        now = time.monotonic()
        if duration_s is not None and now - start >= duration_s:
            break
        if idle_end_s is not None and heard_s is not None and now - heard_s >= idle_end_s:
            break
        while True:  # keep draining until the tick
            if subscriber.poll(max(0, int((next_s - time.monotonic()) * 1000))):
                heard_s = time.monotonic()
            if time.monotonic() >= next_s:
                break
        sink(viewer.render())
        count += 1
        next_s += interval
    return viewer


@dataclass
class ViewSummary:
    """How a :func:`view_stream` ended."""

    where: str  # "FILE.mp4 (N frames)" or "window"
    viewer: Viewer
    stats: SubscriberStats
    stopped_by: str | None  # the signal that ended an mp4 view early, else None


def view_stream(
    connect: str,
    *,
    out: str | None = None,
    window: bool = False,
    frames: int | None = None,
    duration_s: float | None = None,
    idle_end_s: float = 5.0,
    fps: float = 30.0,
    stale_after_ms: float = 100.0,
    keys_dir: str | None = None,
    key_name: str = "headset",
    predict: bool = False,
) -> ViewSummary:
    """Subscribe to ``connect`` and draw the view into the mp4 ``out`` or a ``window``.

    Ends after ``frames`` images or ``duration_s``; with neither, when the edge
    has sent nothing for ``idle_end_s`` (it stopped). Writing an mp4, SIGINT or
    SIGTERM finishes the file and ends the view (``stopped_by``); in a window,
    Esc or q raises KeyboardInterrupt. ``predict``: draw current overlays
    extrapolated to the drawing time (see :class:`Viewer`). ``keys_dir``: CurveZMQ keys of the
    headset ``key_name`` (default: plaintext). Raises TransportError for a
    bad rate or idle time, no output, or a window on headless OpenCV.
    """
    from edge.frames import require_frames
    from edge.service import GracefulStop
    from edge.transport.security import ClientSecurity

    if frames is not None:
        require_frames(frames)
    if fps <= 0:
        raise TransportError(f"--fps must be positive, got {fps}", "pass --fps 30")
    if not out and not window:
        raise TransportError("nothing to show the view on", "pass --out FILE.mp4 or --window")
    if idle_end_s <= 0:
        raise TransportError(f"--idle-s must be positive, got {idle_end_s}", "pass --idle-s 5")
    security = (
        ClientSecurity.from_keys_dir(keys_dir, key_name) if keys_dir else ClientSecurity.plaintext()
    )
    if window:
        check_window_support()
    sub = Subscriber(connect, security)
    try:
        if not out:
            viewer = run_view(
                sub,
                frames=frames,
                fps=fps,
                stale_after_ms=stale_after_ms,
                sink=_show_in_window,
                duration_s=duration_s,
                predict=predict,
            )
            return ViewSummary("window", viewer, sub.stats, None)
        stop = GracefulStop()
        sink = Mp4Sink(out, fps)
        try:
            with stop:  # Ctrl-C or SIGTERM: finish the mp4, then report how it ended
                viewer = run_view(
                    sub,
                    frames=frames,
                    fps=fps,
                    stale_after_ms=stale_after_ms,
                    sink=sink.write,
                    duration_s=duration_s,
                    # Open-ended (no frames or duration): the view ends when the edge goes quiet.
                    idle_end_s=idle_end_s if frames is None and duration_s is None else None,
                    should_stop=lambda: stop.requested,
                    predict=predict,
                )
        finally:
            sink.close()
        where = f"{sink.path} ({sink.frames} frames)"
        return ViewSummary(where, viewer, sub.stats, stop.signal_name if stop.requested else None)
    finally:
        sub.close()


def _show_in_window(image: np.ndarray) -> None:
    import cv2

    cv2.imshow("edge view", image)
    if cv2.waitKey(1) in (27, ord("q")):
        raise KeyboardInterrupt


def draw_overlay(
    canvas: np.ndarray, payload: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Draw one overlay message's primitives and state banner on a BGR image, in place.

    Green when current (TRACKING), amber when shown but not current, nothing
    but the red banner when the edge says LOST or SEARCHING.
    """
    import cv2

    state = payload["state"]
    nothing_shown = (RegistrationState.LOST.value, RegistrationState.SEARCHING.value)
    color = GREEN if payload["current"] else (RED if state in nothing_shown else AMBER)
    Viewer._draw_primitives(canvas, payload, arrays, color)
    text = _ascii(str(payload.get("state_text", state)))
    cv2.rectangle(canvas, (0, 0), (canvas.shape[1] - 1, 44), (0, 0, 0), -1)
    cv2.putText(canvas, text[:60], (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.9, color, 2, cv2.LINE_AA)
    regions = payload.get("regions")
    if isinstance(regions, list) and regions and state not in nothing_shown:
        fitted = _ascii("fit on: " + ", ".join(str(r) for r in regions[:6]))
        h = canvas.shape[0]
        cv2.rectangle(canvas, (0, h - 26), (canvas.shape[1] - 1, h - 1), (0, 0, 0), -1)
        cv2.putText(canvas, fitted[:80], (10, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)


CYAN = (230, 220, 60)  # BGR


def _mm(x: Any) -> str:
    """A figure as the readout shows it: one decimal, or "-" when the edge sent nil."""
    return "-" if x is None else f"{float(x):.1f}"


def tool_readout(tool: dict[str, Any]) -> str:
    """One line per tool: tip to target, off the line, angle, depth left; or what is missing.

    ``tool`` is an entry the tools codec accepted (edge/transport/tools_codec.py)."""
    nav = tool["navigation"]
    if not tool["current"]:
        why = f" ({tool['reason']})" if tool["reason"] else ""
        return f"{tool['name']}: {tool['state']}{why} - no navigation"
    if not nav["current"]:
        return f"{tool['name']}: no navigation, not current: {', '.join(nav['missing'])}"
    parts = [str(tool["name"]) + ":"]
    for t in nav["trajectories"][:1]:
        parts.append(
            f"{_mm(t['distance_to_target_mm'])} mm to target, off line "
            f"{_mm(t['lateral_offset_mm'])} mm, {_mm(t['angle_deg'])} deg, depth left "
            f"{_mm(t['remaining_depth_mm'])} mm"
        )
    if len(parts) == 1:
        for t in nav["targets"][:1]:
            parts.append(f"{_mm(t['distance_mm'])} mm to {t['name']}")
    s = nav["structure"]
    if s["inside"]:
        parts.append(f"INSIDE {s['name']} {_mm(s['distance_mm'])} mm")
    elif s["warning"]:
        parts.append(f"NEAR {s['name']} {_mm(s['distance_mm'])} mm")
    return " ".join(parts)


def draw_tools(canvas: np.ndarray, payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Draw each current tool's tip and its virtual extension along the axis, and a readout
    line per tool (tip to target, lateral offset, angle, depth left; or what is missing)."""
    import cv2

    h = canvas.shape[0]
    for i, tool in enumerate(payload["tools"]):
        nav = tool["navigation"]
        near = nav["current"] and nav["structure"]["warning"]
        color = (RED if near else CYAN) if tool["current"] else AMBER
        if tool["current"]:
            ext = arrays["extensions_px"][i]
            if np.isfinite(ext).all() and (np.abs(ext) < 1e5).all():
                a = (round(float(ext[0, 0])), round(float(ext[0, 1])))
                b = (round(float(ext[1, 0])), round(float(ext[1, 1])))
                cv2.line(canvas, a, b, color, 1, cv2.LINE_AA)
                cv2.circle(canvas, a, 5, color, 2, cv2.LINE_AA)
        y = h - 34 - 18 * i
        line = _ascii(tool_readout(tool))[:90]
        cv2.putText(canvas, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)

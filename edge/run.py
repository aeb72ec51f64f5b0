"""`edge run`, the main job: set up every stage, run the frame loop, report.

Set-up order (any expected failure is an EdgeError and the process exits 2
before READY): models (fetched on first use, checksums verified), source,
plan (signature verified; a plan refused at run time leaves the process
running without an overlay), stages and transport (``edge.pipeline.compose``),
audit log, metrics. Then READY is sent to systemd and frames flow until the
source ends, ``--frames`` is reached, or SIGTERM/SIGINT asks to stop.

The embedded default (no ``--source``, no configured source): the phantom
(``nod-shake``) with the plan it generates, signed with a demo key, streamed
with CurveZMQ using demo keys; all demo files live under ``out/demo``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edge import __version__
from edge.config import EdgeConfig
from edge.errors import EdgeError, PlanError
from edge.evaluation import Evaluator
from edge.frames import FrameSource
from edge.pipeline import FrameResult, Pipeline, compose
from edge.registration.types import RegistrationState

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "phantom:nod-shake"
DEFAULT_FRAMES = 300
DEMO_DIR = Path("out/demo")


@dataclass
class RunOptions:
    """What the command line (or a test) asks of one run."""

    config: EdgeConfig = field(default_factory=EdgeConfig)
    source: str | None = None  # None: the configured source, else the embedded default
    frames: int | None = None
    plan: str | None = None  # plan folder; None: the configured plan, the phantom's, or none
    pubkey: str | None = None
    allow_unsigned_plan: bool = False
    publish: str | None = None  # PUB endpoint; "off" disables streaming
    service: str | None = None  # ROUTER endpoint for assets and commands
    preview: str | None = None  # .mp4 (every frame) or .png (the last frame)
    seed: int = 0
    workdir: Path = DEMO_DIR
    demo_keys: bool = False  # throw-away CurveZMQ keys in workdir when none are configured
    status_stream: IO[str] | None = None  # live one-line status; None: no status line
    # Wraps the opened-to-be source (fault injection, soak looping); None: use it as is.
    wrap_source: Callable[[FrameSource], FrameSource] | None = None


@dataclass
class RunReport:
    """Outcome of a run: the evaluator's figures plus what was set up."""

    summary: dict[str, Any]
    plan_problem: str = ""


def source_spec(options: RunOptions) -> str:
    """The ``--source`` spec to open: the option, the configuration, or the embedded default."""
    if options.source:
        return options.source
    src = options.config.source
    if src.kind == "recording":
        return src.path
    if src.kind == "realsense":
        return "realsense" + (
            f":{options.config.realsense.serial}" if options.config.realsense.serial else ""
        )
    return DEFAULT_SOURCE


def _demo_plan(source: Any, workdir: Path) -> tuple[Path, bytes]:
    """Write the phantom's plan and sign it with a demo key kept in ``workdir``."""
    from edge.plan.sign import generate_keypair, load_private_key, load_public_key, sign_plan
    from edge.sources.phantom.plan_out import write_plan

    plan_dir = workdir / "plan"
    write_plan(source.face, plan_dir)
    prefix = workdir / "demo-signer"
    keys = generate_keypair(prefix, overwrite=True)
    sign_plan(plan_dir, load_private_key(keys.private))
    log.info("demo: plan generated from the phantom in %s, signed with a demo key", plan_dir)
    return plan_dir, load_public_key(keys.public)


def load_run_plan(options: RunOptions, source: Any) -> tuple[Any, str]:
    """The plan for this run, or (None, why not). Never raises for a refused plan."""
    from edge.plan.load import load_plan
    from edge.plan.sign import load_public_key

    cfg = options.config.plan
    folder = options.plan or cfg.path
    pubkey_file = options.pubkey or cfg.public_key
    allow_unsigned = options.allow_unsigned_plan or cfg.allow_unsigned
    try:
        if folder:
            public = load_public_key(pubkey_file) if pubkey_file else None
            return load_plan(folder, public_key=public, allow_unsigned=allow_unsigned), ""
        if type(source).__name__ == "PhantomSource":
            plan_dir, public = _demo_plan(source, options.workdir)
            return load_plan(plan_dir, public_key=public), ""
    except PlanError as exc:
        log.error("plan refused, running without an overlay: %s", exc)
        return None, str(exc)
    return None, "no plan given (--plan DIR)"


def device_calibration(
    source: FrameSource, cfg: EdgeConfig
) -> tuple[FrameSource, list[str], Path | None]:
    """Use the camera's own intrinsics calibration when one matches; else say why not.

    Returns the (possibly wrapped) source, the warnings for the HUD and the
    calibration file used (None when none is). Sources
    without a serial number (phantom, synthetic) know their intrinsics exactly.
    """
    serial = str(getattr(source, "serial", "") or "")
    if not serial:
        return source, [], None
    from edge.calibration.results import find_calibration
    from edge.sources.calibrated import CalibratedSource, intrinsics_from_calibration

    rs = cfg.realsense
    lookup = find_calibration(
        serial,
        rs.width,
        rs.height,
        "intrinsics",
        cfg.calibration.devices_dir,
        cfg.calibration.max_age_days,
    )
    log.info("%s", lookup.message)
    warnings = [lookup.warning] if lookup.warning else []
    if lookup.result is None:
        return source, warnings, None
    calibrated = CalibratedSource(source, intrinsics_from_calibration(lookup.result.parameters))
    return calibrated, warnings, lookup.path


def _transport_config(options: RunOptions, demo_keys: bool) -> Any:
    """Transport section with command-line endpoints; throw-away keys when asked and none exist."""
    t = options.config.transport
    changes: dict[str, Any] = {}
    if options.publish:
        changes["publish_endpoint"] = options.publish
    if options.service:
        changes["service_endpoint"] = options.service
    configured = Path(t.keys_dir) / "edge.key_secret"
    if t.security == "curve" and demo_keys and not configured.exists():
        from edge.transport.security import generate_keys

        keys_dir = options.workdir / "keys"
        if not (keys_dir / "edge.key_secret").exists():
            generate_keys(keys_dir)
            log.info("demo: CurveZMQ keys for the edge and one headset written to %s", keys_dir)
        changes["keys_dir"] = str(keys_dir)
    return dataclasses.replace(t, **changes)


class StatusLine:
    """A one-line live status (frame, fps, latency, state), at most a few times a second."""

    def __init__(self, stream: IO[str], total: int | None, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.total = total
        self.interval_s = interval_s
        self.tty = stream.isatty()
        self._last = 0.0
        self._start = time.monotonic()
        self._count = 0

    def update(self, result: FrameResult) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last < (self.interval_s if self.tty else 5.0):
            return
        self._last = now
        fps = self._count / max(now - self._start, 1e-9)
        reg = result.registration
        state = reg.state.value if reg is not None else ("no plan" if result.tracking else "-")
        face = "face" if result.tracking is not None and result.tracking.patient else "no face"
        of = f"/{self.total}" if self.total else ""
        line = (
            f"frame {self._count}{of}  {fps:5.1f} fps  latency {result.end_to_end_ms:5.1f} ms"
            f"  {face}  {state}"
        )
        self.stream.write(("\r" + line + "   ") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._count:
            self.stream.write("\n")
            self.stream.flush()


class PreviewWriter:
    """Draws what the pipeline saw (landmarks, overlay) on the color frames.

    ``.mp4``: every frame; ``.png``: the last frame. Written to a temporary
    name and moved into place on close, so a failed run leaves no half file.
    """

    def __init__(self, path: str, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".png"):
            raise EdgeError(f"preview file {path} must end in .mp4 or .png", "choose another name")
        if not self.path.parent.exists():
            raise EdgeError(f"folder {self.path.parent} does not exist", "create it first")
        self.fps = fps
        self._sink: Any = None
        self._last: Any = None
        self._tmp = self.path.with_name(f".{self.path.stem}.part{suffix}")

    def draw(self, result: FrameResult) -> Any:
        from edge.tracking.draw import draw_faces
        from edge.transport.viewer import draw_overlay

        image = result.frame.bgr().copy()
        if result.tracking is not None and result.tracking.patient is not None:
            image = draw_faces(image, [result.tracking.patient])
        if result.overlay is not None:
            payload, arrays = result.overlay.overlay_payload()
            draw_overlay(image, payload, arrays)
        return image

    def add(self, result: FrameResult) -> None:
        image = self.draw(result)
        if self.path.suffix.lower() == ".png":
            self._last = image
            return
        if self._sink is None:
            import cv2

            h, w = image.shape[:2]
            self._sink = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._sink.isOpened():
                raise EdgeError(f"cannot write video {self.path}", "check the folder is writable")
        self._sink.write(image)

    def close(self, keep: bool = True) -> None:
        import os

        import cv2

        if self._sink is not None:
            self._sink.release()
        elif self._last is not None and keep:
            ok, data = cv2.imencode(".png", self._last)
            if ok:
                self._tmp.write_bytes(data.tobytes())
        if keep and self._tmp.exists():
            os.replace(self._tmp, self.path)
        elif self._tmp.exists():
            self._tmp.unlink()


def execute(
    options: RunOptions, on_result: Callable[[FrameResult], None] | None = None
) -> RunReport:
    """Set up, run the frame loop until the source ends or a stop is requested, report.

    Raises EdgeError for any set-up failure (before READY is sent).
    """
    from edge.audit import AuditLog
    from edge.keys import load_device_signing_key
    from edge.metrics import MetricsServer, PipelineMetrics, Registry
    from edge.models import ensure_models
    from edge.service import GracefulStop, Notifier
    from edge.sources import open_source

    cfg = options.config
    notifier = Notifier.from_environment()
    notifier.status("loading models")
    models = ensure_models(cfg.tracking.models_dir)
    spec = source_spec(options)
    embedded_default = options.source is None and cfg.source.kind == "phantom"
    frames = (
        options.frames
        if options.frames is not None
        else (DEFAULT_FRAMES if embedded_default else None)
    )
    source = open_source(spec, cfg, frames=frames, seed=options.seed)
    if options.wrap_source is not None:
        source = options.wrap_source(source)
    closers: list[Callable[[], None]] = [source.close]
    audit: AuditLog | None = None
    try:
        notifier.status("opening the source")
        source.open()
        source, warnings, calibration_file = device_calibration(source, cfg)
        plan, plan_problem = load_run_plan(options, source)
        if cfg.audit.enabled:
            audit = AuditLog.open(cfg.audit.path, load_device_signing_key(cfg.audit.device_key))
            closers.append(audit.close)
            from edge.models.fetch import sha256_file

            audit.process_start(
                __version__,
                {name: sha256_file(p) for name, p in models.items()},
                plan.digest if plan is not None else None,
                source=spec,
            )
            if plan is not None:
                audit.plan_loaded(
                    str(options.plan or cfg.plan.path or "phantom demo"),
                    plan.digest,
                    "signed" if plan.signed else "UNSIGNED (override)",
                )
            else:
                audit.plan_refused(str(options.plan or cfg.plan.path or "-"), plan_problem)
            if calibration_file is not None:
                audit.calibration_used(str(calibration_file), sha256_file(calibration_file))
        server = None
        if options.publish != "off":
            from edge.transport.server import EdgeServer

            # Phantom input holds no patient data: without configured keys, demo keys do.
            demo = options.demo_keys or spec.startswith("phantom")
            tcfg = _transport_config(options, demo)
            server = EdgeServer(tcfg, plan, keys_dir=tcfg.keys_dir, plan_problem=plan_problem)
            closers.append(server.close)
        pipeline = compose(
            cfg,
            source,
            plan=plan,
            publish=server.publish_stage if server is not None else None,
            warnings=tuple(warnings),
        )
        metrics: PipelineMetrics | None = None
        if cfg.service.metrics_enabled:
            registry = Registry()
            metrics = PipelineMetrics(registry, states=[s.value for s in RegistrationState])
            metrics_server = MetricsServer(
                registry, cfg.service.metrics_host, cfg.service.metrics_port
            ).start()
            closers.append(metrics_server.stop)
        preview = PreviewWriter(options.preview, source.nominal_fps) if options.preview else None
        status = StatusLine(options.status_stream, frames) if options.status_stream else None
        evaluator = Evaluator(targets_m=dict(plan.targets) if plan is not None else {})
        last_state: list[RegistrationState | None] = [None]

        def handle(result: FrameResult) -> bool:
            evaluator.add(result)
            if server is not None:
                for command in server.commands.poll():
                    apply_command(pipeline, command, audit)
            state = result.registration.state if result.registration is not None else None
            if state != last_state[0]:
                if audit is not None and state is not None:
                    audit.state_changed(
                        last_state[0].value if last_state[0] is not None else None,
                        state.value,
                        result.frame.number,
                        "; ".join(result.registration.quality.reasons),
                    )
                if metrics is not None and state is not None:
                    metrics.set_state(state)
                last_state[0] = state
            if metrics is not None:
                metrics.observe(result)
            if preview is not None:
                preview.add(result)
            if status is not None:
                status.update(result)
            if on_result is not None:
                on_result(result)
            notifier.watchdog()
            return not stop.requested

        def gap(reason: str) -> bool:
            # No frame (camera away): nothing may look current; keep the watchdog and stop alive.
            previous, lost = last_state[0], RegistrationState.LOST
            if previous is not None and previous not in (lost, RegistrationState.SEARCHING):
                if audit is not None:
                    audit.state_changed(previous.value, lost.value, -1, reason)
                if metrics is not None:
                    metrics.set_state(lost)
                last_state[0] = lost
            notifier.watchdog()
            return not stop.requested

        with GracefulStop(
            hard_exit_after_s=cfg.service.stop_timeout_s, on_stop=lambda why: notifier.stopping(why)
        ) as stop:
            notifier.ready(f"running on {spec}")
            start = time.monotonic()
            count = pipeline.run(max_frames=frames, on_result=handle, on_gap=gap)
            elapsed = time.monotonic() - start
        if status is not None:
            status.close()
        if preview is not None:
            preview.close(keep=count > 0)
        summary = evaluator.summary()
        summary.update(
            source=spec,
            plan=(plan.case_id if plan is not None else None),
            plan_signed=(plan.signed if plan is not None else None),
            duration_s=elapsed,
            fps=count / elapsed if elapsed > 0 else 0.0,
            stopped_by=stop.signal_name or "end of source",
            stale_frames=pipeline.stale_frames,
            late_frames=pipeline.late_frames,
            source_gaps=pipeline.source_gaps,
        )
        if server is not None:
            summary["published"] = dict(server.publisher.sent) if server.publisher else {}
            summary["publish_endpoint"] = server.publisher.endpoint if server.publisher else None
        if audit is not None:
            audit.process_stop(summary["stopped_by"], count)
        return RunReport(
            summary=summary, plan_problem=plan_problem if options.plan or cfg.plan.path else ""
        )
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception:  # closing must not hide the error that got us here
                log.exception("error while closing")


def apply_command(pipeline: Pipeline, command: Any, audit: Any) -> None:
    """Carry out a validated headset command between frames."""
    stages = {s.name: s for s in pipeline.stages}
    log.info("command %s from %s", command.name, command.peer)
    if audit is not None:
        audit.log("headset.command", command=command.name, args=command.args, peer=command.peer)
    if command.name == "reregister" and "registration" in stages:
        stages["registration"].reset()  # type: ignore[attr-defined]
    elif command.name == "toggle_layer" and "overlay" in stages:
        overlay: Any = stages["overlay"]
        overlay.set_layer(command.args["layer"], command.args["visible"])


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable end-of-run summary."""
    lines = [
        f"edge run: {summary['frames']} frames from {summary['source']}"
        f" in {summary['duration_s']:.1f} s ({summary['fps']:.1f} fps),"
        f" stopped by {summary['stopped_by']}",
    ]
    if summary.get("plan"):
        signed = "signed" if summary["plan_signed"] else "UNSIGNED override"
        lines.append(f"plan: {summary['plan']} ({signed})")
    else:
        lines.append("plan: none (tracking only, no overlay)")
    e2e = summary["end_to_end_ms"]
    lines.append(
        f"end-to-end latency: p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms,"
        f" p99 {e2e['p99']:.1f} ms"
    )
    lines.append("stage            p50 ms   p99 ms")
    for name, s in summary["stages"].items():
        lines.append(f"  {name:<14}{s['p50_ms']:8.2f} {s['p99_ms']:8.2f}")
    if summary["state_fractions"]:
        states = ", ".join(f"{k} {v:.0%}" for k, v in summary["state_fractions"].items())
        lines.append(f"registration states: {states}")
    if "landmark_error_px" in summary:
        lp, lm = summary["landmark_error_px"], summary["landmark_error_mm"]
        lines.append(
            f"landmark error vs ground truth: median {lp['median']:.2f} px / {lm['median']:.2f} mm,"
            f" p95 {lp['p95']:.2f} px / {lm['p95']:.2f} mm"
        )
    if "tre_mm" in summary:
        t, r = summary["tre_mm"], summary["rotation_error_deg"]
        lines.append(
            f"target registration error vs ground truth: mean {t['mean']:.2f} mm,"
            f" p95 {t['p95']:.2f} mm, max {t['max']:.2f} mm;"
            f" rotation median {r['median']:.2f} deg"
        )
    if summary["failed_frames"]:
        lines.append(f"frames on which a stage failed: {summary['failed_frames']}")
    if summary.get("publish_endpoint"):
        sent = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("published", {}).items()))
        lines.append(f"streamed on {summary['publish_endpoint']}: {sent}")
    return "\n".join(lines)

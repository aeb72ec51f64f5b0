"""The composition root: everything `edge run` (and `edge bench`) runs, built in one place.

One frame flows one way::

    source -> tracking -> registration -> overlay -> publish     (stages, edge.pipeline)
                                                  \\-> sinks: evaluation, audit, metrics,
                                                      recording, preview, status line,
                                                      watchdog, headset commands

:func:`execute` builds, in this order (any expected failure is an EdgeError and
the process exits 2 before READY): the checks `edge config check` makes
(:func:`edge.validate.validate_deployment`), models (checksums verified against the
manifest, never built: a missing or tampered model is refused, and audited when
auditing is on; rebuilding is an explicit ``edge models fetch``), source (wrapped
with the camera's own calibration when one matches), plan (signature verified; a
refused plan leaves the process running without an overlay), audit log, transport
(publisher, plan service, publish stage), the stages (:func:`compose`) and the
sinks, among them the session recording when ``[recordings]`` enables it (sealed
when the run stops). Then READY goes to systemd and frames flow until the source ends,
``frames`` is reached, or SIGTERM/SIGINT asks to stop. Everything is closed in
reverse order by one ExitStack.

The embedded default (no source given, none configured): the phantom
(``nod-shake``) with the plan it generates, signed with a demo key, streamed
with CurveZMQ using demo keys; all demo files live under ``out/demo`` (edge/demo.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edge import __version__
from edge.config import EdgeConfig, SourceConfig, TransportConfig
from edge.errors import PlanError
from edge.evaluation import Evaluator
from edge.frames import FrameResult, FrameSource
from edge.pipeline import Pipeline, Sink, Stage
from edge.plan.model import Plan

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = "nod-shake"  # the embedded default: the phantom in this scenario
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


# ----------------------------------------------------------------------------- stages


def compose(
    config: EdgeConfig,
    source: FrameSource,
    *,
    plan: Plan | None = None,
    publish: Stage | None = None,
    tracker: Any = None,
    warnings: tuple[str, ...] = (),
    sinks: tuple[Sink, ...] = (),
) -> Pipeline:
    """The edge process's pipeline: source -> tracking (+ tools beside it) -> registration ->
    overlay (-> navigation) -> publish; ``overlap_stages``: registration on in a 2nd thread.

    Without a plan there is nothing to register or draw: only tracking runs,
    and the publish stage sends no overlay (its heartbeat says why).
    ``tracker`` replaces the face tracker built from ``config.tracking``
    (tests inject one). ``warnings`` (e.g. a stale calibration) go on every
    frame's HUD.
    """
    from edge.tracking.tracker import FaceTracker, TrackingStage

    # The registration reads the 3-D landmarks it pairs with the plan's named ones; nothing
    # else reads 3-D landmarks but the evaluation of all of them (tracking.lift_all_landmarks).
    lift: list[int] | None = None
    if not config.tracking.lift_all_landmarks:
        from edge.registration.landmarks import LANDMARK_INDEX

        named = plan.landmarks if plan is not None else {}
        lift = [i for name, i in LANDMARK_INDEX.items() if name in named]
    tracking: Stage = TrackingStage(tracker or FaceTracker.from_config(config.tracking), lift)
    if config.tools.enabled:  # tracked instruments ([tools], docs/tools.md)
        from edge.tools.beside import SideBySide
        from edge.tools.stage import ToolStage

        # Side by side on each frame (neither reads the other's result): "tracking+tools".
        tracking = SideBySide(tracking, ToolStage.from_config(config.tools))
    stages: list[Stage] = [tracking]
    if plan is not None:
        from edge.overlay.project import DisplayProfile
        from edge.overlay.stage import OverlayStage
        from edge.registration.stage import RegistrationStage

        stages.append(RegistrationStage(plan, config.registration))
        name = config.overlay.display_profile
        profile = DisplayProfile.from_file(name) if name else None
        stages.append(OverlayStage(plan, profile, config.overlay, warnings=warnings))
        if config.tools.enabled:
            from edge.overlay.navigation import NavigationStage

            stages.append(NavigationStage(plan, config.tools))
    if publish is not None:
        stages.append(publish)
    overlap = config.pipeline.overlap_stages and plan is not None
    return Pipeline(source, stages, sinks, split_before="registration" if overlap else None)


# ----------------------------------------------------------------------------- set-up steps


def run_source(options: RunOptions) -> SourceConfig:
    """The source to open: the ``--source`` option, the configuration, or the embedded default.

    Raises SourceError for a ``--source`` text that is not one of the valid forms.
    """
    from edge.sources import parse_source_spec

    src = options.config.source
    if options.source:
        # The playback options of [source] apply to a --source given on the command line.
        return dataclasses.replace(
            parse_source_spec(options.source), timing=src.timing, loop=src.loop
        )
    # Filled in from the configuration so that logs and the audit log name the camera
    # and scenario actually used.
    if src.kind == "realsense":
        return dataclasses.replace(src, serial=src.serial or options.config.realsense.serial)
    if src.kind == "phantom":
        return dataclasses.replace(src, scenario=src.scenario or DEFAULT_SCENARIO)
    return src


def load_run_plan(options: RunOptions, source: FrameSource) -> tuple[Plan | None, str]:
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
            plan = load_plan(folder, public_key=public, allow_unsigned=allow_unsigned, limits=cfg)
            return plan, ""
        if type(source).__name__ == "PhantomSource":
            from edge.demo import demo_plan

            return demo_plan(source, options.workdir, cfg), ""
    except PlanError as exc:
        log.error("plan refused, running without an overlay: %s", exc)
        return None, str(exc)
    return None, "no plan given (--plan DIR)"


def device_calibration(
    source: FrameSource, cfg: EdgeConfig
) -> tuple[FrameSource, list[str], Path | None]:
    """Use the camera's own intrinsics calibration when one matches; else say why not.

    Returns the (possibly wrapped) source, the warnings for the HUD and the
    calibration file used (None when none is). Sources without a serial
    number (phantom, synthetic) know their intrinsics exactly.
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


def transport_config(options: RunOptions, demo_keys: bool) -> TransportConfig:
    """Transport section with command-line endpoints; throw-away keys when asked and none exist."""
    t = options.config.transport
    changes: dict[str, Any] = {}
    if options.publish:
        changes["publish_endpoint"] = options.publish
    if options.service:
        changes["service_endpoint"] = options.service
    configured = Path(t.keys_dir) / "edge.key_secret"
    if t.security == "curve" and demo_keys and not configured.exists():
        from edge.demo import demo_keys as make_demo_keys

        changes["keys_dir"] = str(make_demo_keys(options.workdir))
    return dataclasses.replace(t, **changes)


def _open_audit(
    options: RunOptions,
    models: dict[str, Path],
    plan: Plan | None,
    plan_problem: str,
    calibration_file: Path | None,
    spec: str,
) -> Any:
    """The audit log with this run's start entries, or None when auditing is off."""
    from edge.audit import AuditLog
    from edge.keys import load_device_signing_key
    from edge.models.fetch import sha256_file

    cfg = options.config
    if not cfg.audit.enabled:
        return None
    audit = AuditLog.open(cfg.audit.path, load_device_signing_key(cfg.audit.device_key))
    audit.process_start(
        __version__,
        {name: sha256_file(p) for name, p in models.items()},
        plan.digest if plan is not None else None,
        source=spec,
        skin_depth_bias_mm=cfg.registration.skin_depth_bias_mm,
    )
    where = str(options.plan or cfg.plan.path or "phantom demo")
    if plan is not None:
        audit.plan_loaded(where, plan.digest, "signed" if plan.signed else "UNSIGNED (override)")
        if not plan.signed:
            by = "--allow-unsigned-plan" if options.allow_unsigned_plan else "plan.allow_unsigned"
            audit.override("unsigned plan", by, "the plan's signature was not checked", plan=where)
    else:
        audit.plan_refused(str(options.plan or cfg.plan.path or "-"), plan_problem)
    if calibration_file is not None:
        audit.calibration_used(str(calibration_file), sha256_file(calibration_file))
    return audit


def _verified_models(cfg: EdgeConfig) -> dict[str, Path]:
    """Every model, checked against the manifest; never built here (``edge models fetch`` does).

    A refusal (missing model, SHA-256 differs) is audited when auditing is on,
    then raised: the process exits 2 before READY.
    """
    from edge.errors import EdgeError, ModelError
    from edge.models import require_models

    try:
        return require_models(cfg.tracking.models_dir)
    except ModelError as exc:
        if cfg.audit.enabled:
            from edge.audit import AuditLog
            from edge.keys import load_device_signing_key

            try:
                key = load_device_signing_key(cfg.audit.device_key)
                with AuditLog.open(cfg.audit.path, key) as audit:
                    audit.model_refused(
                        exc.problem,
                        fix=exc.fix,
                        models_dir=str(cfg.tracking.models_dir),
                        version=__version__,
                    )
            except EdgeError as audit_exc:  # the model error is the one to report
                log.error("cannot audit the refused model: %s", audit_exc)
        raise


def _audit_handshakes(audit: Any) -> Callable[[Any], None] | None:
    """The authenticator's callback writing each CURVE handshake to the audit log."""
    if audit is None:
        return None

    def record(shake: Any) -> None:
        if shake.accepted:
            audit.headset_connected(shake.name, shake.address, shake.key_fingerprint)
        else:
            audit.headset_refused(shake.address, shake.key_fingerprint, shake.reason)

    return record


def _audit_enrolment(audit: Any, security: Any) -> None:
    """One ``headset.enrolled`` entry per key this run admits (the enrolment in force)."""
    from edge.transport.security import key_fingerprint

    for key, name in sorted(security.enrolled_names.items(), key=lambda kv: kv[1]):
        audit.headset_enrolled(name, key_fingerprint(key))


def _audit_enrolment_changes(audit: Any) -> Callable[[Any], None] | None:
    """The server's callback writing each enrolment change while running: keys added
    (``headset.enrolled``) and withdrawn with the reason (``headset.revoked``)."""
    if audit is None:
        return None
    from edge.transport.security import key_fingerprint

    def record(change: Any) -> None:
        for key, name in sorted(change.added.items(), key=lambda kv: kv[1]):
            audit.headset_enrolled(name, key_fingerprint(key), while_running=True)
        for key, (name, reason) in sorted(change.removed.items(), key=lambda kv: kv[1]):
            audit.headset_revoked(name, key_fingerprint(key), reason)

    return record


def _audit_disconnections(audit: Any) -> Callable[[Any], None] | None:
    """The server's callback writing each authenticated connection that ended."""
    if audit is None:
        return None

    def record(gone: Any) -> None:
        audit.headset_disconnected(
            gone.name,
            address=gone.address,
            socket=gone.socket,
            connected_s=gone.connected_s,
            reason=gone.reason,
        )

    return record


def _open_run_source(
    source_config: SourceConfig, cfg: EdgeConfig, frames: int | None, seed: int
) -> FrameSource:
    """The source built (not opened) with [source]'s playback: ``timing``, and ``loop``
    (a recording replayed until the run stops; validate_deployment refuses it for others)."""
    from edge.frames import TimingMode
    from edge.sources import open_source

    timing = TimingMode(source_config.timing)

    def build() -> FrameSource:
        return open_source(source_config, cfg, frames=frames, timing=timing, seed=seed)

    first = build()  # a bad path is refused now, not when the loop opens it
    if not source_config.loop:
        return first
    from edge.sources.replay import LoopingSource

    passes = [first]
    return LoopingSource(
        lambda: passes.pop() if passes else build(),
        lambda: False,
        keep_truth=True,
        paced=first.paced,
    )


def _recording_summary(recording: Any) -> dict[str, Any]:
    """What became of the session's recording, for the run summary."""
    if recording is None:
        return {"path": None, "frames": 0, "stopped": "not recorded (see the log)"}
    sealed = recording.sealed
    return {
        "path": str(sealed) if sealed is not None else None,
        "frames": recording.frames,
        "stopped": recording.stop_reason,
    }


# ----------------------------------------------------------------------------- the run


def _closing(close: Callable[[], object]) -> Callable[[], None]:
    """``close`` for an ExitStack: an error while closing is logged, never raised, so it
    cannot hide the error that ended the run."""

    def quietly() -> None:
        try:
            close()
        except Exception:
            log.exception("error while closing")

    return quietly


def execute(
    options: RunOptions, on_result: Callable[[FrameResult], None] | None = None
) -> RunReport:
    """Set up, run the frame loop until the source ends or a stop is requested, report.

    ``on_result`` sees every finished result (tests, benchmarks). Raises
    EdgeError for any set-up failure (before READY is sent).
    """
    from edge.metrics import MetricsServer, PipelineMetrics, Registry
    from edge.registration.types import RegistrationState
    from edge.service import GracefulStop, Notifier
    from edge.sinks.audit import AuditSink
    from edge.sinks.commands import CommandRouter
    from edge.sinks.preview import PreviewWriter
    from edge.sinks.service import Watchdog
    from edge.sinks.status import StatusLine
    from edge.sources import format_source_spec
    from edge.validate import validate_deployment

    cfg = options.config
    notifier = Notifier.from_environment()
    source_config = run_source(options)
    streaming = options.publish != "off"
    # Phantom input holds no patient data: without configured keys, demo keys do.
    demo = options.demo_keys or source_config.kind == "phantom"
    tcfg = transport_config(options, demo) if streaming else cfg.transport
    # The checks `edge config check` makes, on what this run will use; before anything starts.
    validate_deployment(
        dataclasses.replace(cfg, source=source_config, transport=tcfg), streaming=streaming
    )
    notifier.status("verifying models")
    models = _verified_models(cfg)
    spec = format_source_spec(source_config)
    embedded_default = options.source is None and cfg.source.kind == "phantom"
    frames = options.frames
    if frames is None and embedded_default:
        frames = DEFAULT_FRAMES
    source = _open_run_source(source_config, cfg, frames, options.seed)
    if options.wrap_source is not None:
        source = options.wrap_source(source)

    with contextlib.ExitStack() as stack:
        stack.callback(_closing(source.close))
        notifier.status("opening the source")
        source.open()
        source, warnings, calibration_file = device_calibration(source, cfg)
        plan, plan_problem = load_run_plan(options, source)
        audit = _open_audit(options, models, plan, plan_problem, calibration_file, spec)
        if audit is not None:
            stack.callback(_closing(audit.close))

        server = None
        publish: PublishStage | None = None
        if streaming:
            from edge.transport.server import EdgeServer
            from edge.transport.stage import PublishStage, plan_info

            server = EdgeServer(
                tcfg,
                plan,
                keys_dir=tcfg.keys_dir,
                on_handshake=_audit_handshakes(audit),
                on_enrolment=_audit_enrolment_changes(audit),
                on_disconnect=_audit_disconnections(audit),
            )
            stack.callback(_closing(server.close))
            if audit is not None:
                _audit_enrolment(audit, server.security)
            assert server.publisher is not None
            publish = PublishStage.from_config(
                server.publisher, tcfg, plan_info(plan, plan_problem)
            ).start()
            stack.callback(_closing(publish.close))  # before the server: LIFO

        evaluator = Evaluator(targets_m=dict(plan.targets) if plan is not None else {})
        sinks: list[Sink] = [evaluator]
        tool_evaluator = None
        if cfg.tools.enabled:
            from edge.tools.evaluation import ToolEvaluator

            tool_evaluator = ToolEvaluator(plan)
            sinks.append(tool_evaluator)
        if audit is not None:
            sinks.append(AuditSink(audit))
        if cfg.service.metrics_enabled:
            registry = Registry()
            sinks.append(PipelineMetrics(registry, states=[s.value for s in RegistrationState]))
            metrics_server = MetricsServer(
                registry, cfg.service.metrics_host, cfg.service.metrics_port
            ).start()
            stack.callback(_closing(metrics_server.stop))
        recording = None
        if cfg.recordings.enabled:
            from edge.sinks.recording import start_recording

            recording = start_recording(
                cfg.recordings, fps=source.nominal_fps, audit=audit, notifier=notifier
            )
        if recording is not None:
            sinks.append(recording)
            # Sealed at stop (below); on an error, here (before the audit log closes).
            stack.callback(_closing(lambda: recording.close("the run ended with an error")))
        preview = PreviewWriter(options.preview, source.nominal_fps) if options.preview else None
        if preview is not None:
            sinks.append(preview)
        status = StatusLine(options.status_stream, frames) if options.status_stream else None
        if status is not None:
            sinks.append(status)
        sinks.append(Watchdog(notifier))

        from edge.sources.readahead import with_read_ahead

        pipeline = compose(
            cfg,
            with_read_ahead(source, cfg.pipeline.read_ahead),
            plan=plan,
            publish=publish,
            warnings=tuple(warnings),
            sinks=tuple(sinks),
        )
        if server is not None:
            pipeline.sinks.append(CommandRouter(server.commands, pipeline.stages, audit))

        with GracefulStop(
            hard_exit_after_s=cfg.service.stop_timeout_s, on_stop=notifier.stopping
        ) as stop:
            notifier.ready(f"running on {spec}")
            start = time.monotonic()
            count = pipeline.run(
                max_frames=frames,
                on_result=on_result,
                should_stop=lambda: stop.requested,
            )
            elapsed = time.monotonic() - start
        if status is not None:
            status.close()
        if recording is not None:
            recording.close(f"the run stopped ({stop.signal_name or 'end of source'})")
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
        if preview is not None:
            summary["preview"] = {"written": preview.written, "dropped": preview.dropped}
        if tool_evaluator is not None:
            summary.update(tool_evaluator.summary())
        if cfg.recordings.enabled:
            summary["recording"] = _recording_summary(recording)
        if server is not None and server.publisher is not None:
            summary["published"] = dict(server.publisher.sent)
            summary["publish_endpoint"] = server.publisher.endpoint
        if audit is not None:
            audit.process_stop(summary["stopped_by"], count)
        return RunReport(
            summary=summary, plan_problem=plan_problem if options.plan or cfg.plan.path else ""
        )

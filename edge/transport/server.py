"""The edge's side of the transport, assembled from the configuration in one place."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge.config import TransportConfig
from edge.plan.model import Plan
from edge.transport.publisher import Publisher, VideoPreview
from edge.transport.security import ServerSecurity, is_loopback, start_authenticator
from edge.transport.service import CommandQueue, PlanService
from edge.transport.stage import PublishStage

log = logging.getLogger(__name__)


class EdgeServer:
    """Publisher + plan/command service + ZAP authenticator + publish stage.

    Use as a context manager, or call ``close()``; ``publish_stage`` is the
    pipeline's last stage and ``commands`` is the queue to poll.
    """

    def __init__(
        self,
        config: TransportConfig,
        plan: Plan | None,
        *,
        keys_dir: str | Path | None = None,
        publish_endpoint: str | None = None,
        plan_problem: str = "",
    ) -> None:
        import zmq

        self.config = config
        endpoint = publish_endpoint or config.publish_endpoint
        if config.security == "curve":
            security = ServerSecurity.from_keys_dir(keys_dir or config.keys_dir)
        else:
            security = ServerSecurity.plaintext()
        self.context: Any = zmq.Context()
        self.auth: Any = None
        self.publisher: Publisher | None = None
        self.service: PlanService | None = None
        self.publish_stage: PublishStage | None = None
        try:
            self.auth = start_authenticator(self.context, security)
            self.publisher = Publisher(
                self.context,
                endpoint,
                security,
                send_hwm=config.send_hwm,
                buffer_bytes=config.socket_buffer_bytes,
                sender=config.sender,
            )
            self.commands = CommandQueue()
            self.service = PlanService(
                self.context,
                config.service_endpoint,
                security,
                plan,
                self.commands,
                sender=config.sender,
                max_message_bytes=config.max_message_bytes,
            ).start()
            video_on = config.video == "on" or (config.video == "auto" and is_loopback(endpoint))
            video = (
                VideoPreview(
                    self.publisher,
                    max_fps=config.video_max_fps,
                    max_width=config.video_max_width,
                    jpeg_quality=config.video_jpeg_quality,
                )
                if video_on
                else None
            )
            self.publish_stage = PublishStage(
                self.publisher,
                video=video,
                status_hz=config.status_hz,
                # Without a plan the heartbeat still runs and says why there is no overlay.
                plan_info=(
                    {"case_id": plan.case_id, "digest": plan.digest}
                    if plan is not None
                    else {"refused": plan_problem or "no plan loaded"}
                ),
            ).start()
        except BaseException:
            self.close()
            raise
        log.info(
            "streaming on %s (%s), plan service on %s, video preview %s",
            self.publisher.endpoint,
            security.mode,
            self.service.endpoint,
            "on" if video_on else "off",
        )

    def __enter__(self) -> EdgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.publish_stage is not None:
            self.publish_stage.close()
        if self.service is not None:
            self.service.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.context.term()

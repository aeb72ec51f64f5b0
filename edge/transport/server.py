"""The edge's sockets: publisher, plan/command service and the ZAP authenticator.

The publish *stage* that streams each frame through the publisher is built by
the composition root (:mod:`edge.app`) with :meth:`PublishStage.from_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import TransportConfig
from edge.plan.model import Plan
from edge.transport.publisher import Publisher
from edge.transport.security import Handshake, ServerSecurity, start_authenticator
from edge.transport.service import CommandQueue, PlanService

log = logging.getLogger(__name__)


class EdgeServer:
    """Publisher + plan/command service + ZAP authenticator.

    Use as a context manager, or call ``close()``; ``commands`` is the queue of
    validated headset commands to poll. ``on_handshake`` hears every CURVE
    handshake decided (accepted or refused), on the authenticator's thread.
    """

    def __init__(
        self,
        config: TransportConfig,
        plan: Plan | None,
        *,
        keys_dir: str | Path | None = None,
        publish_endpoint: str | None = None,
        on_handshake: Callable[[Handshake], None] | None = None,
    ) -> None:
        import zmq

        self.config = config
        endpoint = publish_endpoint or config.publish_endpoint
        if config.security == "curve":
            security = ServerSecurity.from_keys_dir(keys_dir or config.keys_dir)
        else:
            security = ServerSecurity.plaintext()
        self.security = security
        self.context: Any = zmq.Context()
        self.auth: Any = None
        self.publisher: Publisher | None = None
        self.service: PlanService | None = None
        try:
            self.auth = start_authenticator(self.context, security, on_handshake)
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
        except BaseException:
            self.close()
            raise
        log.info(
            "streaming on %s (%s), plan service on %s",
            self.publisher.endpoint,
            security.mode,
            self.service.endpoint,
        )

    def __enter__(self) -> EdgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.service is not None:
            self.service.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.context.term()

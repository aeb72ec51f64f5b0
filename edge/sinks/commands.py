"""Headset commands, carried out between frames by the stage that declares them.

The plan service (:mod:`edge.transport.service`) validates each command and
queues it; after every frame (and every gap) this sink takes what is queued
and calls the handler of the stage that declared the command in its
``commands`` table (``reregister``: registration; ``toggle_layer``: overlay).
Every command is audited when an audit log is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from edge.audit import AuditLog
from edge.frames import FrameResult
from edge.pipeline import CommandHandler
from edge.transport.service import CommandQueue

log = logging.getLogger(__name__)


class CommandRouter:
    """Routes queued headset commands to the stages that handle them."""

    name = "commands"

    def __init__(
        self, queue: CommandQueue, stages: Iterable[object], audit: AuditLog | None = None
    ) -> None:
        self.queue = queue
        self.audit = audit
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        for stage in stages:
            if isinstance(stage, CommandHandler):
                self.handlers.update(stage.commands)

    def consume(self, result: FrameResult) -> None:
        self.carry_out()

    def source_gap(self, reason: str) -> None:
        self.carry_out()

    def carry_out(self) -> None:
        for command in self.queue.poll():
            log.info("command %s from %s", command.name, command.peer)
            if self.audit is not None:
                self.audit.log(
                    "headset.command", command=command.name, args=command.args, peer=command.peer
                )
            handler = self.handlers.get(command.name)
            if handler is None:  # e.g. reregister while no plan is loaded
                log.info("command %s: no stage handles it in this run", command.name)
                continue
            handler(command.args)

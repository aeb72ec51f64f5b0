"""What consumes a finished frame: reports, never changes to the frame's result.

Each sink has a ``name`` and ``consume(result)``; some also have
``source_gap(reason)`` (a live source had no frame) and ``close()``. The
composition root (:mod:`edge.app`) decides which run: the audit log
(:mod:`.audit`), Prometheus metrics (:class:`edge.metrics.PipelineMetrics`),
the session recording, sealed at stop (:mod:`.recording`), the preview video
(:mod:`.preview`), the live status line (:mod:`.status`), the accuracy
evaluator (:class:`edge.evaluation.Evaluator`), systemd's watchdog
(:mod:`.service`) and the headset-command router (:mod:`.commands`).
"""

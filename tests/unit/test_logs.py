"""Structured JSON logs: fields, extras, exceptions, journald priority prefix."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.logs import configure_logging, stream_is_journal


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_fields_extras_and_exceptions(restore_root):
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream, env={})
    log = logging.getLogger("edge.test")
    log.debug("not shown")
    log.warning("state %s", "LOST", extra={"frame": 12, "stage": "registration"})
    try:
        raise ValueError("bad depth")
    except ValueError:
        log.exception("stage failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["level"] == "warning" and first["message"] == "state LOST"
    assert first["logger"] == "edge.test"
    assert first["frame"] == 12 and first["stage"] == "registration"
    assert first["time"].endswith("Z")
    assert "ValueError: bad depth" in second["exception"]


def test_journal_stream_gets_a_priority_prefix(restore_root, tmp_path: Path):
    with (tmp_path / "journal").open("w+") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journal(stream, env)
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "1:2"})
        configure_logging("json", "debug", stream=stream, env=env)
        logging.getLogger("edge.test").error("camera unplugged")
        logging.getLogger("edge.test").debug("detail")
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[0].startswith('<3>{"time"')
    assert json.loads(lines[0][3:])["message"] == "camera unplugged"
    assert lines[1].startswith("<7>")


def test_text_format_and_bad_format(restore_root):
    stream = io.StringIO()
    configure_logging("text", "warning", stream=stream)
    logging.getLogger("edge.x").warning("hello")
    assert stream.getvalue() == "WARNING edge.x: hello\n"
    with pytest.raises(ValueError, match="log_format"):
        configure_logging("xml", stream=stream)


def test_a_failing_stage_is_logged_with_its_stage_and_frame(restore_root):
    """What `jq 'select(.stage == "registration")'` in docs/deployment.md finds."""
    from edge.pipeline import Pipeline
    from support.fakes import CountingSource

    class Broken:
        name = "registration"

        def process(self, result: object) -> None:
            raise RuntimeError("no pose")

    stream = io.StringIO()
    configure_logging("json", "info", stream=stream, env={})
    with CountingSource(2) as source:
        Pipeline(source, [Broken()]).run()
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    failures = [x for x in lines if x.get("stage") == "registration"]
    assert [x["frame"] for x in failures] == [1, 2]
    assert "RuntimeError: no pose" in failures[0]["exception"]

"""One validation path: `edge config check` refuses exactly what `edge run` refuses, with the
same one line, and `edge run` refuses it before anything starts (models, source, sockets)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import edge.models
from edge.cli import main
from edge.config import RANGES, EdgeConfig, parse_config
from edge.errors import ConfigError

PLAIN = '[transport]\nsecurity = "plaintext"\n'  # no key files needed: the range is the problem


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), err
    return lines[0]


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge run` must fail before it loads the models (and so before source and sockets)."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("edge run got past validation")

    monkeypatch.setattr(edge.models, "ensure_models", refuse)


def check_and_run_refuse(
    capsys: pytest.CaptureFixture[str], f: Path, *needles: str, source: str = "synthetic"
) -> str:
    checked = _error_line(capsys, ["config", "check", str(f)])
    ran = _error_line(
        capsys, ["run", "--config", str(f), "--frames", "1", "--source", source, "--quiet"]
    )
    assert checked == ran
    for needle in needles:
        assert needle in checked, checked
    return checked


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[transport]\nsend_hwm = 0\n", ("'transport.send_hwm' = 0", "allowed 1..100000")),
        ("[transport]\nsend_hwm = -1\n", ("'transport.send_hwm' = -1", "allowed 1..100000")),
        ("[transport]\nstatus_hz = 0\n", ("'transport.status_hz' = 0.0", "allowed 0.01..100")),
        ("[transport]\nstatus_hz = nan\n", ("'transport.status_hz' = nan", "allowed 0.01..100")),
        ("[transport]\nstatus_hz = inf\n", ("'transport.status_hz' = inf", "allowed 0.01..100")),
        ("[realsense]\nfps = 0\n", ("'realsense.fps' = 0", "allowed 1..300")),
        ("[realsense]\nwidth = -640\n", ("'realsense.width' = -640", "allowed 16..4096")),
        (
            "[tracking]\nintra_op_threads = 100000\n",
            ("'tracking.intra_op_threads' = 100000", "allowed 1..256"),
        ),
        ("[tracking]\ndepth_max_m = -inf\n", ("'tracking.depth_max_m' = -inf",)),
        ("[tracking]\nsmoothing_beta = nan\n", ("'tracking.smoothing_beta' = nan", "finite")),
    ],
)
def test_out_of_range_values_are_refused_by_check_and_run_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None, text: str, needles: tuple
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(PLAIN + text if not text.startswith("[transport]") else text)
    check_and_run_refuse(capsys, f, str(f), "out of range", *needles)


@pytest.mark.parametrize(
    ("transport", "needles"),
    [
        (
            'security = "plaintext"\npublish_endpoint = "tcp://127.0.0.1:99999"\n',
            ("tcp://127.0.0.1:99999", "'99999'", "allowed 0..65535"),
        ),
        (
            'security = "plaintext"\npublish_endpoint = "tcp://0.0.0.0:5555"\n',
            ("plaintext refused on tcp://0.0.0.0:5555", "transport.security = 'curve'"),
        ),
        (
            'security = "plaintext"\nservice_endpoint = "tcp://192.168.1.20:5556"\n',
            ("plaintext refused on tcp://192.168.1.20:5556",),
        ),
        (
            'security = "plaintext"\npublish_endpoint = "tcp://*:5555"\n',
            ("plaintext refused on tcp://*:5555",),
        ),
        ('publish_endpoint = "udp://x"\n', ("not a ZeroMQ endpoint",)),
    ],
)
def test_endpoints_and_security_are_refused_by_check_and_run_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None, transport: str, needles
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text("[transport]\n" + transport)
    check_and_run_refuse(capsys, f, *needles)


def test_the_command_line_endpoint_is_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(PLAIN)
    argv = ["run", "--config", str(f), "--source", "synthetic", "--frames", "1", "--quiet"]
    line = _error_line(capsys, [*argv, "--publish", "tcp://10.0.0.5:5555"])
    assert "plaintext refused on tcp://10.0.0.5:5555" in line


def _keys(tmp_path: Path) -> Path:
    from edge.transport.security import generate_keys

    keys = tmp_path / "keys"
    generate_keys(keys)
    return keys


def test_world_readable_edge_secret_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None
) -> None:
    keys = _keys(tmp_path)
    f = tmp_path / "edge.toml"
    f.write_text(f'[transport]\nkeys_dir = "{keys}"\n')
    assert main(["config", "check", str(f)]) == 0  # 0600 as generated
    capsys.readouterr()
    secret = keys / "edge.key_secret"
    os.chmod(secret, 0o644)
    check_and_run_refuse(capsys, f, f"secret key {secret} has mode 0644", f"chmod 600 {secret}")


def test_missing_keys_are_refused_unless_the_phantom_makes_demo_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(f'[source]\nkind = "synthetic"\n[transport]\nkeys_dir = "{tmp_path / "none"}"\n')
    check_and_run_refuse(capsys, f, "edge.key_secret")
    # Phantom input: `edge run` makes throw-away keys, so check accepts the missing folder.
    f.write_text(f'[transport]\nkeys_dir = "{tmp_path / "none"}"\n')
    assert main(["config", "check", str(f)]) == 0


def test_audit_device_key_readable_by_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None
) -> None:
    from edge.keys import generate_device_key

    pair = generate_device_key(tmp_path / "device")
    os.chmod(pair.private, 0o644)
    f = tmp_path / "edge.toml"
    f.write_text(PLAIN + f'[audit]\nenabled = true\ndevice_key = "{pair.private}"\n')
    check_and_run_refuse(capsys, f, f"{pair.private} has mode 0644", "chmod 600")


@pytest.mark.parametrize("kind", ["synthetic", "phantom", "realsense"])
def test_loop_needs_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: None, kind: str
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(PLAIN + f'[source]\nkind = "{kind}"\nloop = true\n')
    check_and_run_refuse(capsys, f, "source.loop = true needs a recording", source=kind)


def test_every_range_names_a_numeric_key_whose_default_is_in_range() -> None:
    defaults = EdgeConfig()
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(defaults, section), name)
        assert not isinstance(value, bool) and isinstance(value, int | float), key
        assert low <= value <= high, key
        parse_config({section: {name: value}}, "x")  # the default itself passes
        for bad in (low - 1, high + 1):
            if isinstance(value, int) and isinstance(low, float):
                continue  # pragma: no cover - no such key
            with pytest.raises(ConfigError, match=f"'{key}' = .* is out of range"):
                parse_config({section: {name: type(value)(bad)}}, "x")


# --------------------------------------------------------------------- [source] playback


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rec")
    cfg = folder / "rec.toml"
    cfg.write_text("[realsense]\nfps = 5\nwidth = 160\nheight = 120\n")
    out = folder / "five.db3"
    argv = ["record", "--source", "synthetic", "--frames", "4", "--out", str(out)]
    assert main([*argv, "--config", str(cfg), "--quiet"]) == 0
    return out


def _run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, frames: int) -> dict:
    f = tmp_path / "edge.toml"
    f.write_text(PLAIN + text)  # what check validates; the run itself does not stream
    assert main(["config", "check", str(f)]) == 0
    argv = ["run", "--config", str(f), "--frames", str(frames), "--no-publish", "--json"]
    code = main([*argv, "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    return dict(json.loads(out[out.index("{") :]))


def test_loop_replays_a_recording_through_edge_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recording: Path
) -> None:
    source = f'[source]\nkind = "recording"\npath = "{recording}"\n'
    once = _run_json(tmp_path, capsys, source, 10)
    assert once["frames"] == 4  # the recording ends the run
    looped = _run_json(tmp_path, capsys, source + "loop = true\n", 10)
    assert looped["frames"] == 10 and looped["stale_frames"] == 0


def test_realtime_timing_plays_a_recording_at_its_recorded_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recording: Path
) -> None:
    source = f'[source]\nkind = "recording"\npath = "{recording}"\n'
    realtime = _run_json(tmp_path, capsys, source + 'timing = "realtime"\n', 4)
    assert realtime["frames"] == 4
    assert realtime["duration_s"] >= 0.5  # 3 periods of 0.2 s between 4 frames at 5 fps


def test_command_line_source_keeps_the_configured_playback() -> None:
    from edge.app import RunOptions, run_source

    cfg = dataclasses.replace(
        EdgeConfig(),
        source=dataclasses.replace(EdgeConfig().source, timing="realtime", loop=True),
    )
    src = run_source(RunOptions(config=cfg, source="x.db3"))
    assert (src.kind, src.path, src.timing, src.loop) == ("recording", "x.db3", "realtime", True)


def test_a_looped_replay_is_paced_as_its_passes_are(recording: Path) -> None:
    """So a real-time loop is read when the loop asks, not ahead (edge/sources/readahead.py)."""
    from edge.app import _open_run_source
    from edge.sources.readahead import ReadAheadSource, with_read_ahead

    for timing, paced in (("realtime", True), ("deterministic", False)):
        playback = dataclasses.replace(
            EdgeConfig().source, kind="recording", path=str(recording), timing=timing, loop=True
        )
        looped = _open_run_source(playback, EdgeConfig(), None, 0)
        assert looped.paced is paced
        assert isinstance(with_read_ahead(looped, True), ReadAheadSource) is not paced

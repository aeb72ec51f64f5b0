"""`edge config check|show`, the deployment sections, and the example file kept in sync."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import EdgeConfig, load_config, parse_config
from edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def leaves(obj: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            out.update(leaves(value, key))
        else:
            out[key] = value
    return out


def test_check_accepts_a_good_file(tmp_path: Path, capsys):
    f = tmp_path / "edge.toml"
    f.write_text('[source]\nkind = "phantom"\n[service]\nlog_format = "json"\n')
    assert main(["config", "check", str(f)]) == 0
    assert f"{f}: valid (2 key(s) set in the file" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[source]\nknd = 'phantom'\n", "source.knd"),
        ("[servce]\n", "servce"),
        ("[audit]\nenabled = 'yes'\n", "audit.enabled"),
        ("[service]\nmetrics_host = '0.0.0.0'\n", "metrics_host must be a loopback address"),
        ("[recordings]\nretention_days = -1\n", "'recordings.retention_days' = -1 is out of range"),
        ("[service]\nlog_level = 'verbose'\n", "service.log_level"),
    ],
)
def test_check_names_the_key_and_the_file(tmp_path: Path, capsys, text: str, needle: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(f) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_check_missing_and_broken_files(tmp_path: Path, capsys):
    assert main(["config", "check", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "b.toml").write_text("[source\n")
    assert main(["config", "check", str(tmp_path / "b.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_show_round_trips_and_names_origins(tmp_path: Path, capsys, monkeypatch):
    f = tmp_path / "edge.toml"
    f.write_text("[realsense]\nfps = 15\n[audit]\nenabled = true\n")
    monkeypatch.setenv("EDGE_CONFIG", str(f))
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"file: {f}" in out
    assert f"fps = 15  # {f}" in out
    assert "width = 640  # default" in out
    # What show prints is itself a valid configuration equal to the effective one.
    shown, _ = parse_config(tomllib.loads(out), "shown")
    assert shown == load_config(f)[0]
    assert shown.realsense.fps == 15 and shown.audit.enabled


def test_show_json_and_defaults(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./edge.toml here
    if Path("/etc/edge/edge.toml").exists():  # pragma: no cover - a deployed machine
        pytest.skip("/etc/edge/edge.toml exists on this machine")
    assert main(["config", "show", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source.kind"] == {"value": "phantom", "origin": "default"}
    assert set(doc) == set(leaves(EdgeConfig()))


def test_deployment_sections_defaults_are_safe():
    cfg = EdgeConfig()
    assert cfg.recordings.enabled is False  # recording patients is off unless asked for
    assert cfg.service.metrics_host == "127.0.0.1"
    with pytest.raises(ConfigError, match="stop_timeout_s"):
        parse_config({"service": {"stop_timeout_s": 0}}, "x.toml")


def test_example_file_is_valid_and_lists_every_key_with_its_default(repo_root: Path):
    example = repo_root / "edge.example.toml"
    cfg, _ = load_config(example)
    defaults = leaves(EdgeConfig())
    assert cfg.audit.enabled and cfg.service.log_format == "json"
    section = ""
    seen: set[str] = set()
    for line in example.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
            continue
        text = line[2:] if line.startswith("# ") else line
        if " = " not in text or text.startswith("#"):
            continue
        name = text.split(" = ", 1)[0]
        key = f"{section}.{name}"
        if key not in defaults:
            continue  # prose in a comment
        seen.add(key)
        if line.startswith("# "):
            value = tomllib.loads(text)[name]
            assert parse_config(_nest(key, value), "example")[0] == parse_config({}, "d")[0], (
                f"{key}: the example says the default is {value!r}, it is {defaults[key]!r}"
            )
    missing = sorted(set(defaults) - seen)
    assert not missing, f"add these keys to edge.example.toml: {missing}"


def _nest(key: str, value: object) -> dict[str, object]:
    parts = key.split(".")
    doc: dict[str, object] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        doc = {part: doc}
    return doc

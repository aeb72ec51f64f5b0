"""Every TOML file the edge reads (configuration, display profiles, the model manifest) goes
through edge.files.read_toml: a huge or deeply nested file is one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import ConfigError, ModelError
from edge.files import MAX_TOML_BYTES, read_toml
from edge.models.manifest import load_manifest
from edge.overlay.project import DisplayProfile

DEEP_ARRAY = "a = " + "[" * 100_000 + "]" * 100_000 + "\n"
DEEP_INLINE = "a = " + "{b = " * 5_000 + "1" + "}" * 5_000 + "\n"
HUGE = "# " + "x" * (50 * 1024 * 1024) + "\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (DEEP_ARRAY, "nests arrays or inline tables deeper than the parser can follow"),
        (DEEP_INLINE, "nests arrays or inline tables deeper than the parser can follow"),
        (HUGE, f"larger than {MAX_TOML_BYTES} bytes"),
        ("[source\n", "not valid TOML"),
    ],
    ids=["array-100000-deep", "inline-table-5000-deep", "50-MB", "bad-text"],
)
def test_read_toml_bounds(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "x.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=needle):
        read_toml(f)


def test_read_toml_refuses_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_bytes(b"a = '\xff'\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_toml(f)


@pytest.mark.parametrize("text", [DEEP_ARRAY, HUGE], ids=["deep", "huge"])
def test_edge_config_check_says_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(text)
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err
    assert "Traceback" not in err and "RecursionError" not in err


def test_edge_run_with_a_deep_configuration_says_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(DEEP_ARRAY)
    assert main(["run", "--config", str(f), "--frames", "1", "--no-publish"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nests arrays" in err and "Traceback" not in err


def test_display_profile_and_model_manifest_are_bounded(tmp_path: Path) -> None:
    f = tmp_path / "deep.toml"
    f.write_text(DEEP_ARRAY)
    with pytest.raises(ConfigError, match=r"deep\.toml: it nests arrays"):
        DisplayProfile.from_file(f)
    with pytest.raises(ModelError, match=r"deep\.toml: it nests arrays"):
        load_manifest(f)

from pathlib import Path

import pytest

from edge.config import EdgeConfig, load_config, parse_config
from edge.errors import ConfigError


def test_defaults_have_a_default_origin():
    cfg, origins = parse_config({}, "defaults")
    assert cfg == EdgeConfig()
    assert origins["source.kind"] == "default"
    assert origins["realsense.fps"] == "default"


def test_file_values_and_origins(tmp_path: Path):
    f = tmp_path / "edge.toml"
    f.write_text('[source]\nkind = "recording"\npath = "a.db3"\n[realsense]\nfps = 15\n')
    cfg, origins = load_config(f)
    assert cfg.source.kind == "recording"
    assert cfg.realsense.fps == 15
    assert origins["realsense.fps"] == str(f)
    assert origins["realsense.width"] == "default"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[source]\nknd = 'phantom'\n", "source.knd"),
        ("[sorce]\n", "sorce"),
        ("[realsense]\nfps = '30'\n", "realsense.fps"),
        ("[realsense]\nfps = true\n", "realsense.fps"),
        ("[source]\nkind = 'webcam'\n", "source.kind"),
        ("[tracking]\nproviders = 'CPU'\n", "tracking.providers"),
    ],
)
def test_bad_keys_and_types_name_the_key_and_file(tmp_path: Path, text: str, needle: str):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert needle in str(info.value)
    assert str(f) in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    f = tmp_path / "broken.toml"
    f.write_text("[source\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")

"""The systemd unit, the service user and the camera's udev rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ServiceConfig

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


@pytest.fixture(scope="module")
def unit_text(repo_root: Path) -> str:
    return (repo_root / "systemd" / "edge.service").read_text()


def runnable_copy(unit_text: str, folder: Path, name: str = "edge.service") -> Path:
    # verify checks that ExecStart exists; the real one lives on the device.
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", unit_text, flags=re.M)
    path = folder / name
    path.write_text(text)
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_is_clean(unit_text: str, tmp_path: Path):
    result = analyze("verify", "--man=no", str(runnable_copy(unit_text, tmp_path)))
    # verify exits 0 even for lines it ignores: any message about our unit is a failure.
    messages = [
        line for line in (result.stdout + result.stderr).splitlines() if "edge.service" in line
    ]
    assert result.returncode == 0 and messages == [], messages


@needs_analyze
def test_verify_would_catch_a_mistake(unit_text: str, tmp_path: Path):
    broken = unit_text.replace("Type=notify", "Type=notfy").replace(
        "WatchdogSec=10", "WatchdogSec=ten"
    )
    result = analyze("verify", "--man=no", str(runnable_copy(broken, tmp_path)))
    out = result.stdout + result.stderr
    assert "notfy" in out and "ten" in out


@needs_analyze
def test_hardening_exposure_is_low(unit_text: str, tmp_path: Path):
    path = runnable_copy(unit_text, tmp_path)
    probe = analyze("security", "--help")
    if "--offline" not in probe.stdout:
        pytest.skip("this systemd-analyze cannot score a unit offline")
    # Exposure is 0 (locked down) to 10 (none); threshold is on a 0-100 scale.
    result = analyze("security", "--offline=yes", "--threshold=25", str(path))
    assert result.returncode == 0, result.stdout[-2000:]


def test_unit_has_the_required_settings(unit_text: str):
    d = directives(unit_text)
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "edge",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
        "UMask": "0077",
        "NotifyAccess": "main",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert int(d["StartLimitBurst"][0]) >= 1 and int(d["StartLimitIntervalSec"][0]) > 0
    assert d["ReadWritePaths"] == ["/var/lib/edge"]
    assert "EDGE_CONFIG=/etc/edge/edge.toml" in d["Environment"][0]
    # The compiled kernels' disk cache (edge/jit.py) lies in the service's own cache
    # directory, the one place under /var/cache that ProtectSystem=strict leaves writable.
    assert d["CacheDirectory"] == ["edge"]
    assert "NUMBA_CACHE_DIR=/var/cache/edge/numba" in d["Environment"]
    # systemd kills only after the process's own bounded stop has had its chance.
    assert float(d["TimeoutStopSec"][0]) > ServiceConfig().stop_timeout_s
    assert 1 <= float(d["WatchdogSec"][0]) <= 60


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_creates_the_service_user_in_plugdev(repo_root: Path, tmp_path: Path):
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(repo_root / "systemd" / "edge.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("edge:"))
    assert user.split(":")[5] == "/var/lib/edge"
    assert user.split(":")[6].endswith("nologin")
    plugdev = next(line for line in group.splitlines() if line.startswith("plugdev:"))
    assert "edge" in plugdev.split(":")[3].split(",")


def test_udev_rules_give_the_camera_to_plugdev_only(repo_root: Path, unit_text: str):
    text = (repo_root / "hardware" / "udev" / "99-realsense.rules").read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    token = re.compile(r'^\s*([A-Z_]+(\{[^}]+\})?)\s*(==|!=|=|\+=|:=)\s*"([^"]*)"\s*$')
    device_rules = 0
    for rule in rules:
        pairs = [token.match(part) for part in rule.split(",")]
        assert all(pairs), f"cannot parse udev rule: {rule}"
        fields = {m.group(1): (m.group(3), m.group(4)) for m in pairs if m}
        if "MODE" not in fields:
            continue
        device_rules += 1
        vendor = fields.get("ATTR{idVendor}") or fields.get("ATTRS{idVendor}")
        assert vendor == ("==", "8086"), rule
        assert fields["MODE"] == ("=", "0660") and fields["GROUP"] == ("=", "plugdev"), rule
    assert device_rules >= 3
    assert "0666" not in text
    assert directives(unit_text)["SupplementaryGroups"] == ["plugdev"]

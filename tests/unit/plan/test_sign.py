"""Plan signatures: key files, sign/verify, and tampering of every kind detected."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import PlanError
from edge.plan.load import load_plan
from edge.plan.sign import (
    generate_keypair,
    load_private_key,
    load_public_key,
    plan_digest,
    sign_plan,
    verify_plan,
)
from support.synthetic_face import face_mesh, write_plan

PLAN_FILES = ["plan.json", "skin.stl", "landmarks.mrk.json", "plan.sig"]


@pytest.fixture(scope="module")
def small_mesh():
    return face_mesh(step_m=8e-3)


@pytest.fixture
def keys(tmp_path: Path):
    return generate_keypair(tmp_path / "signer")


@pytest.fixture
def signed_plan(tmp_path: Path, small_mesh, keys) -> Path:
    folder = write_plan(tmp_path / "plan", mesh=small_mesh)
    sign_plan(folder, load_private_key(keys.private))
    return folder


def test_keygen_files_and_permissions(tmp_path: Path, keys) -> None:
    assert stat.S_IMODE(os.stat(keys.private).st_mode) == 0o600
    assert len(load_private_key(keys.private)) == 32
    assert len(load_public_key(keys.public)) == 32
    with pytest.raises(PlanError, match="already exists"):
        generate_keypair(tmp_path / "signer")
    before = load_public_key(keys.public)
    again = generate_keypair(tmp_path / "signer", overwrite=True)
    assert load_public_key(again.public) != before


def test_key_files_are_checked(tmp_path: Path, keys) -> None:
    with pytest.raises(PlanError, match="not an edge plan private key"):
        load_private_key(keys.public)
    with pytest.raises(PlanError, match="not an edge plan public key"):
        load_public_key(keys.private)
    bad = tmp_path / "bad.pub"
    bad.write_text(json.dumps({"kind": "edge-plan-public-key", "public_key": "abcd"}))
    with pytest.raises(PlanError, match="no valid 'public_key'"):
        load_public_key(bad)
    with pytest.raises(PlanError, match="does not exist"):
        load_public_key(tmp_path / "none.pub")


def test_sign_verify_round_trip(signed_plan: Path, keys) -> None:
    pub = load_public_key(keys.public)
    digest = verify_plan(signed_plan, pub)
    assert digest == plan_digest(signed_plan)
    plan = load_plan(signed_plan, public_key=pub)
    assert plan.signed and plan.digest == digest


@pytest.mark.parametrize("name", PLAN_FILES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_any_changed_byte_is_detected(signed_plan: Path, keys, name: str, where: str) -> None:
    path = signed_plan / name
    data = bytearray(path.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PlanError):
        verify_plan(signed_plan, load_public_key(keys.public))
    with pytest.raises(PlanError):
        load_plan(signed_plan, public_key=load_public_key(keys.public))


def _rename(d: Path) -> None:
    (d / "skin.stl").rename(d / "skin2.stl")


def _add(d: Path) -> None:
    (d / "notes.txt").write_text("extra")


def _add_nested(d: Path) -> None:
    (d / "extra").mkdir()
    (d / "extra" / "x.bin").write_bytes(b"\x00")


def _remove(d: Path) -> None:
    (d / "landmarks.mrk.json").unlink()


@pytest.mark.parametrize("change", [_rename, _add, _add_nested, _remove])
def test_renamed_added_removed_files_are_detected(signed_plan: Path, keys, change) -> None:
    change(signed_plan)
    with pytest.raises(PlanError, match="changed after it was signed"):
        verify_plan(signed_plan, load_public_key(keys.public))


def test_wrong_key_and_unsigned_are_refused(signed_plan: Path, tmp_path: Path) -> None:
    other = generate_keypair(tmp_path / "other")
    with pytest.raises(PlanError, match="signed by another key"):
        verify_plan(signed_plan, load_public_key(other.public))
    (signed_plan / "plan.sig").unlink()
    with pytest.raises(PlanError, match="not signed"):
        load_plan(signed_plan, public_key=load_public_key(other.public))


def test_symlink_in_plan_is_refused(signed_plan: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", signed_plan / "link.txt")
    with pytest.raises(PlanError, match="not a regular file"):
        plan_digest(signed_plan)


def test_override_loads_a_tampered_plan_with_a_warning(signed_plan: Path, keys, caplog) -> None:
    (signed_plan / "plan.json").write_text(
        (signed_plan / "plan.json").read_text().replace("SYNTH-0001", "SYNTH-0002")
    )
    with caplog.at_level(logging.WARNING, logger="edge.plan.load"):
        plan = load_plan(signed_plan, public_key=load_public_key(keys.public), allow_unsigned=True)
    assert not plan.signed and plan.case_id == "SYNTH-0002"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_cli_keygen_sign_verify(tmp_path: Path, small_mesh, capsys) -> None:
    folder = write_plan(tmp_path / "plan", mesh=small_mesh)
    prefix = str(tmp_path / "keys" / "planning")  # as docs/plan-format.md shows it
    assert main(["plan", "keygen", "--out", prefix]) == 0
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700  # made private
    assert main(["plan", "sign", str(folder), "--key", prefix + ".key"]) == 0
    assert main(["plan", "verify", str(folder), "--pubkey", prefix + ".pub"]) == 0
    assert "signature valid" in capsys.readouterr().out
    (folder / "skin.stl").write_bytes((folder / "skin.stl").read_bytes() + b"\x00")
    assert main(["plan", "verify", str(folder), "--pubkey", prefix + ".pub"]) == 2
    assert "changed after it was signed" in capsys.readouterr().err


def test_cli_refuses_to_sign_a_broken_plan(tmp_path: Path, small_mesh) -> None:
    folder = write_plan(tmp_path / "plan", mesh=small_mesh)
    (folder / "skin.stl").unlink()
    prefix = str(tmp_path / "k")
    assert main(["plan", "keygen", "--out", prefix]) == 0
    assert main(["plan", "sign", str(folder), "--key", prefix + ".key"]) == 2
    assert not (folder / "plan.sig").exists()


def test_signature_from_another_key_under_the_trusted_name(signed_plan: Path, tmp_path) -> None:
    from edge.plan.sign import _signature_text

    trusted = generate_keypair(tmp_path / "trusted")
    # The plan is signed by `keys`; relabel the signature as the trusted key's.
    doc = json.loads((signed_plan / "plan.sig").read_text())
    (signed_plan / "plan.sig").write_bytes(
        _signature_text(
            doc["digest"], load_public_key(trusted.public), bytes.fromhex(doc["signature"])
        )
    )
    with pytest.raises(PlanError, match="not valid for the trusted public key"):
        verify_plan(signed_plan, load_public_key(trusted.public))


def test_configured_plan(signed_plan: Path, keys) -> None:
    from edge.config import PlanConfig
    from edge.plan.load import load_configured_plan

    plan = load_configured_plan(PlanConfig(path=str(signed_plan), public_key=str(keys.public)))
    assert plan.signed
    with pytest.raises(PlanError, match="no plan configured"):
        load_configured_plan(PlanConfig())
    with pytest.raises(PlanError, match="no public key"):
        load_configured_plan(PlanConfig(path=str(signed_plan)))
    assert not load_configured_plan(PlanConfig(path=str(signed_plan), allow_unsigned=True)).signed

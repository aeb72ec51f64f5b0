"""Every input bounded: the one JSON reader and every file the edge reads through it.

Each refusal is the caller's EdgeError, one line, naming the file and the limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from edge.audit import AuditLog, verify_log
from edge.calibration.procedures import _read_input
from edge.calibration.results import load_result
from edge.cli import main
from edge.errors import AuditError, CalibrationError, KeyFileError, PlanError, SourceError
from edge.files import MAX_JSON_DEPTH, parse_json, read_json
from edge.keys import generate_device_key, load_device_signing_key
from edge.plan.load import read_markups, read_plan
from edge.plan.sign import generate_keypair, load_private_key, sign_plan, verify_plan
from edge.sources.phantom.motion import load_motion
from edge.sources.realsense import load_preset
from edge.sources.recording.truth import load_truth, truth_path
from support.synthetic_face import face_mesh, write_plan

DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB
DEEP_SMALL = "[" * 20_000 + "]" * 20_000  # under the 64 KiB of key and signature files


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --------------------------------------------------------------------------- the reader


def test_nesting_is_bounded_before_the_parser_recurses() -> None:
    assert parse_json(nested(MAX_JSON_DEPTH)) == parse_json(nested(MAX_JSON_DEPTH))
    with pytest.raises(ValueError, match=f"nests {MAX_JSON_DEPTH + 1} levels deep; the limit"):
        parse_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nests 100000 levels deep"):
        parse_json(DEEP)
    with pytest.raises(ValueError, match="nests 100000 levels deep"):
        parse_json('{"a": ' + "[" * 99_999)  # unbalanced counts too
    # Brackets inside strings (escaped quotes included) are text, not nesting.
    assert parse_json(r'{"a": "[[[[\"[[[[", "b": ["{"]}') == {"a": '[[[["[[[[', "b": ["{"]}


def test_size_nul_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="larger than 10 bytes, the limit"):
        parse_json('{"a": 12345}', max_bytes=10)
    with pytest.raises(ValueError, match="NUL byte"):
        parse_json(b'{"a": "x\x00y"}')
    with pytest.raises(ValueError, match="NUL character"):
        parse_json('{"name": "skin\\u0000.stl"}')
    with pytest.raises(ValueError, match="NUL character"):
        parse_json('[["deep", {"k\\u0000": 1}]]')
    assert parse_json('{"a": "x\\\\u0000"}') == {"a": "x\\u0000"}  # an escaped backslash
    with pytest.raises(ValueError, match="duplicate key 'units'"):
        parse_json('{"units": "mm", "units": "m"}')
    with pytest.raises(ValueError):
        parse_json(b"\xff\xfe not utf-8")


def test_read_json_reads_no_more_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text("[" + "1," * 1_000_000 + "1]")
    with pytest.raises(ValueError, match="larger than 1000 bytes"):
        read_json(big, max_bytes=1000)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


# --------------------------------------------------------------------------- plans


@pytest.fixture(scope="module")
def small_mesh():
    return face_mesh(step_m=8e-3)


@pytest.fixture
def plan(tmp_path: Path, small_mesh) -> Path:
    return write_plan(tmp_path / "plan", mesh=small_mesh)


def test_a_deep_plan_signature_is_refused_without_a_key(plan: Path) -> None:
    (plan / "plan.sig").write_text(DEEP_SMALL)
    with pytest.raises(PlanError, match=r"plan\.sig: it nests 20000 levels deep; the limit is 32"):
        verify_plan(plan, bytes(32))
    (plan / "plan.sig").write_text(DEEP)
    with pytest.raises(PlanError, match=r"plan\.sig: it is larger than 65536 bytes, the limit"):
        verify_plan(plan, bytes(32))


def test_deep_or_bad_plan_files_are_plan_errors(plan: Path) -> None:
    manifest = json.loads((plan / "plan.json").read_text())
    (plan / "landmarks.mrk.json").write_text('{"markups": ' + DEEP + "}")
    with pytest.raises(PlanError, match=r"landmarks\.mrk\.json: it nests"):
        read_markups(plan / "landmarks.mrk.json", "landmarks.mrk.json")
    (plan / "plan.json").write_text(DEEP)
    with pytest.raises(PlanError, match=r"plan\.json: it nests"):
        read_plan(plan)
    (plan / "plan.json").write_text(json.dumps({**manifest, "skin": "skin\u0000.stl"}))
    with pytest.raises(PlanError, match=r"plan\.json: it holds a NUL"):
        read_plan(plan)
    (plan / "plan.json").write_text('{"schema": "edge-plan/1", "schema": "edge-plan/1"}')
    with pytest.raises(PlanError, match="duplicate key 'schema'"):
        read_plan(plan)


def test_edge_run_refuses_a_deep_signature_and_runs_on_without_an_overlay(
    tmp_path: Path, plan: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = generate_keypair(tmp_path / "signer")
    sign_plan(plan, load_private_key(keys.private))
    (plan / "plan.sig").write_text(DEEP)
    argv = ["run", "--frames", "3", "--plan", str(plan), "--pubkey", str(keys.public)]
    code = main([*argv, "--no-publish", "--json", "-q"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and "RecursionError" not in err
    assert "plan refused" in err and "plan.sig" in err and "the limit" in err
    summary = json.loads(out)
    assert summary["frames"] == 3 and summary["plan"] is None


def test_edge_plan_verify_refuses_a_deep_signature_in_one_line(
    tmp_path: Path, plan: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = generate_keypair(tmp_path / "signer")
    (plan / "plan.sig").write_text(DEEP_SMALL)
    code = main(["plan", "verify", str(plan), "--pubkey", str(keys.public)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nests 20000 levels deep" in err


# --------------------------------------------------------------------------- keys and audit


def test_a_deep_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    pair = generate_device_key(tmp_path / "device")
    pair.private.write_text('{"kind": ' + DEEP_SMALL + "}")
    with pytest.raises(KeyFileError, match=r"device\.key: it nests"):
        load_device_signing_key(pair.private)
    pair.private.write_text('{"kind": "x", "pad": "' + "a" * 70_000 + '"}')
    with pytest.raises(KeyFileError, match="larger than 65536 bytes"):
        load_device_signing_key(pair.private)


def test_a_deep_audit_line_is_reported_and_refused(tmp_path: Path) -> None:
    key = SigningKey(bytes(range(32)))
    log_path = tmp_path / "audit.jsonl"
    with AuditLog.open(log_path, key) as log:
        log.log("state.changed", new="TRACKING")
    good = log_path.read_bytes()
    log_path.write_bytes(good + DEEP.encode() + b"\n")
    with pytest.raises(AuditError, match=r"ends with a broken entry .*nests 100000 levels deep"):
        AuditLog.open(log_path, key)
    # In the middle of the log: verification stops there and says why.
    log_path.write_bytes(good + DEEP.encode() + b"\n" + good.splitlines(keepends=True)[-1])
    report = verify_log(log_path, key.verify_key)
    assert report.problem is not None and report.problem.line == 3
    assert "nests 100000 levels deep" in report.problem.reason


# --------------------------------------------------------------------------- other readers


def test_truth_calibration_preset_and_motion_files_are_bounded(tmp_path: Path) -> None:
    recording = tmp_path / "r.db3"
    truth_path(recording).write_text(DEEP + "\n" + '{"frame": 0}\n')
    with pytest.raises(SourceError, match=r"line 1 is not valid ground truth \(it nests"):
        load_truth(recording)
    deep_file = tmp_path / "deep.json"
    deep_file.write_text(DEEP)
    with pytest.raises(CalibrationError, match=r"deep\.json.*it nests"):
        load_result(deep_file)
    with pytest.raises(CalibrationError, match=r"deep\.json.*it nests"):
        _read_input(str(deep_file))
    with pytest.raises(SourceError, match=r"deep\.json.*it nests"):
        load_preset(deep_file)
    with pytest.raises(SourceError, match=r"deep\.json.*it nests"):
        load_motion(deep_file)

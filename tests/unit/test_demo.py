"""The embedded default's files (edge/demo.py): runs started together in one demo folder
each use a plan they wrote and verified, and leave one complete plan and key pair."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import edge.plan.load
import edge.transport.security as security
from edge.cli import main
from edge.config import PlanConfig
from edge.demo import LOCK, STALE_S, demo_keys, demo_plan
from edge.plan.load import load_plan
from edge.plan.sign import load_public_key
from edge.sources.phantom import PhantomSource


@pytest.fixture(scope="module")
def phantom():
    with PhantomSource(scenario="static", frames=1) as source:
        yield source


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != LOCK)


def test_a_run_started_beside_another_uses_the_plan_it_wrote(phantom, tmp_path, monkeypatch):
    """A second run writes its plan and key in the same folder between the first one's
    writing and loading (the window two runs started together share)."""
    load = edge.plan.load.load_plan
    beside: list = []

    def loaded_after_another_run(folder, **kw):
        if not beside:
            beside.append(None)
            beside[0] = demo_plan(phantom, tmp_path, PlanConfig())
        return load(folder, **kw)

    monkeypatch.setattr(edge.plan.load, "load_plan", loaded_after_another_run)
    first = demo_plan(phantom, tmp_path, PlanConfig())
    assert beside and first.signed and beside[0].signed
    assert first.digest == beside[0].digest  # the same phantom, signed by two keys
    monkeypatch.undo()
    # What is left is one plan and the key it was signed with, and no private folder.
    public = load_public_key(tmp_path / "demo-signer.pub")
    assert load_plan(tmp_path / "plan", public_key=public).signed
    assert (tmp_path / "plan.truth.json").is_file()
    assert _left_over(tmp_path) == []


def test_an_earlier_plan_folder_is_replaced_whole(phantom, tmp_path):
    old = tmp_path / "plan"
    old.mkdir()
    (old / "stray.json").write_text("{}")
    plan = demo_plan(phantom, tmp_path, PlanConfig())
    assert plan.signed and not (old / "stray.json").exists()
    assert _left_over(tmp_path) == []


def test_keys_are_made_once_and_another_runs_keys_are_kept(tmp_path, monkeypatch):
    keys = demo_keys(tmp_path)
    secret = (keys / "edge.key_secret").read_bytes()
    assert demo_keys(tmp_path) == keys
    assert (keys / "edge.key_secret").read_bytes() == secret
    assert _left_over(tmp_path) == []

    # Another run puts its keys in place while this one makes its own: theirs are used.
    other = tmp_path / "other"
    other.mkdir()
    make = security.generate_keys
    theirs: list[bytes] = []

    def made_beside_another_run(folder, *args, **kw):
        if not theirs:
            make(other / "keys")
            theirs.append((other / "keys" / "edge.key_secret").read_bytes())
        return make(folder, *args, **kw)

    monkeypatch.setattr(security, "generate_keys", made_beside_another_run)
    assert demo_keys(other) == other / "keys"
    assert (other / "keys" / "edge.key_secret").read_bytes() == theirs[0]
    assert _left_over(other) == []


def test_what_a_killed_run_left_is_removed_by_a_later_one(tmp_path):
    left = tmp_path / ".keys-killed"
    left.mkdir()
    (left / "edge.key_secret").write_text("half")
    writing = tmp_path / ".demo-writing"  # another run's, being written now: kept
    writing.mkdir()
    hour_ago = time.time() - 2 * STALE_S
    os.utime(left, (hour_ago, hour_ago))
    demo_keys(tmp_path)
    assert not left.exists() and writing.exists()


def test_a_folder_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "out").write_text("a file where the demo's folder would go")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    assert main(["run", "--frames", "1", "--no-publish", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the demo's plan in out/demo" in err[0], err
    assert "--plan" in err[0]

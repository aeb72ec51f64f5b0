"""The embedded default's files: the phantom's plan signed with a demo key, and throw-away
CurveZMQ keys, all under one folder (``out/demo`` unless ``RunOptions.workdir`` says).

Two runs may start together in one folder (a demo beside the test suite, two engineers'
shells): each run writes what it needs in a private folder first and puts it in place
with renames, so no run reads another's files half-written, or a plan signed with
another run's key. The plan a run uses is the one it wrote, loaded before it is put in
place; of keys written at the same time the first in place is the one every run uses.
A run killed while writing leaves its private folder; a later run removes it once it is
an hour old.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.config import PlanConfig
from edge.plan.model import Plan

log = logging.getLogger(__name__)

PLAN = "plan"  # the plan folder in the demo folder (its truth file beside it)
SIGNER = "demo-signer"  # the key pair it is signed with: demo-signer.key, demo-signer.pub
KEYS = "keys"  # the CurveZMQ keys of the edge and one headset
PRIVATE = (".demo-", ".keys-")  # a run's own folders while it writes
STALE_S = 3600.0


def demo_plan(source: Any, workdir: Path, limits: PlanConfig) -> Plan:
    """The phantom's plan, signed with a new demo key and loaded; left as ``workdir/plan``
    (replacing the one before, whatever an older version left in it) with the key as
    ``workdir/demo-signer.*``. Raises PlanError or SourceError as the writing and
    loading do."""
    from edge.plan.load import load_plan
    from edge.plan.sign import generate_keypair, load_private_key, load_public_key, sign_plan
    from edge.sources.phantom.plan_out import truth_path, write_plan

    own = _private_folder(workdir, ".demo-")
    try:
        write_plan(source.face, own / PLAN)
        keys = generate_keypair(own / SIGNER)
        sign_plan(own / PLAN, load_private_key(keys.private))
        plan = load_plan(own / PLAN, public_key=load_public_key(keys.public), limits=limits)
        for path in (keys.private, keys.public, truth_path(own / PLAN)):
            os.replace(path, workdir / Path(path).name)
        _replace_folder(own / PLAN, workdir / PLAN, own / "old")
    finally:
        shutil.rmtree(own, ignore_errors=True)
    log.info("demo: plan generated from the phantom in %s, signed with a demo key", workdir / PLAN)
    return plan


def _private_folder(workdir: Path, prefix: str) -> Path:
    """A new private folder in ``workdir``, after removing those a run killed while
    writing left (older than :data:`STALE_S`: a run writes its own in well under that)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for left in workdir.iterdir():
        with contextlib.suppress(OSError):
            if left.name.startswith(PRIVATE) and time.time() - left.stat().st_mtime > STALE_S:
                shutil.rmtree(left)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))


def _replace_folder(new: Path, target: Path, old: Path) -> None:
    """Put ``new`` in place of ``target`` (moved to ``old``, inside the caller's private
    folder, to be removed with it). Another run's folder put in place between the two
    renames stays: it is as good as this one."""
    with contextlib.suppress(FileNotFoundError):
        target.rename(old)
    try:
        new.rename(target)
    except OSError:  # ENOTEMPTY / EEXIST: another run's is there now
        log.debug("demo: another run's plan is in %s now; keeping it", target)


def demo_keys(workdir: Path) -> Path:
    """The folder of the demo's CurveZMQ keys (the edge's and one headset's, enrolled),
    made when missing."""
    from edge.transport.security import generate_keys

    keys_dir = workdir / KEYS
    if (keys_dir / "edge.key_secret").exists():
        return keys_dir
    own = _private_folder(workdir, ".keys-")
    try:
        generate_keys(own)
        own.rename(keys_dir)
        log.info("demo: CurveZMQ keys for the edge and one headset written to %s", keys_dir)
    except OSError:  # a folder is there: another run's keys, or one without keys
        if not (keys_dir / "edge.key_secret").exists():
            generate_keys(keys_dir)  # raises TransportError naming a key file in the way
    finally:
        shutil.rmtree(own, ignore_errors=True)
    return keys_dir

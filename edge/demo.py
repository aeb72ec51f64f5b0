"""The embedded default's files: the phantom's plan signed with a demo key, and throw-away
CurveZMQ keys, all under one folder (``out/demo`` unless ``RunOptions.workdir`` says).

Two runs may start together in one folder (a demo beside the test suite, two engineers'
shells): each run writes what it needs in a private folder first and puts it in place
with renames, so no run reads another's files half-written, or a plan signed with
another run's key. The plan a run uses is the one it wrote, loaded before it is put in
place, with its key, while it holds the folder's lock (so the files left beside each
other always belong together); of keys made at the same time, the first in place is the
one every run uses. A run killed while writing leaves its private folder; a later run
removes it once it is an hour old.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.config import PlanConfig
from edge.errors import SourceError, TransportError
from edge.plan.model import Plan

log = logging.getLogger(__name__)

PLAN = "plan"  # the plan folder in the demo folder (its truth file beside it)
SIGNER = "demo-signer"  # the key pair it is signed with: demo-signer.key, demo-signer.pub
KEYS = "keys"  # the CurveZMQ keys of the edge and one headset
LOCK = ".lock"  # held while a run puts its files in place
PRIVATE = (".demo-", ".keys-")  # a run's own folders while it writes
STALE_S = 3600.0
WRITABLE = "run edge in a folder it may write in (the demo's files go to out/demo)"


def demo_plan(source: Any, workdir: Path, limits: PlanConfig) -> Plan:
    """The phantom's plan, signed with a new demo key and loaded; left as ``workdir/plan``
    (replacing the one before, whatever an older version left in it) with the key as
    ``workdir/demo-signer.*``. Raises PlanError, or SourceError when the files cannot be
    written."""
    from edge.plan.load import load_plan
    from edge.plan.sign import generate_keypair, load_private_key, load_public_key, sign_plan
    from edge.sources.phantom.plan_out import truth_path, write_plan

    try:
        own = _private_folder(workdir, ".demo-")
        try:
            write_plan(source.face, own / PLAN)
            keys = generate_keypair(own / SIGNER)
            sign_plan(own / PLAN, load_private_key(keys.private))
            plan = load_plan(own / PLAN, public_key=load_public_key(keys.public), limits=limits)
            with _locked(workdir):  # the plan and the key it was signed with, together
                for path in (keys.private, keys.public, truth_path(own / PLAN)):
                    os.replace(path, workdir / Path(path).name)
                _replace_folder(own / PLAN, workdir / PLAN, own / "old")
        finally:
            shutil.rmtree(own, ignore_errors=True)
    except OSError as exc:
        raise SourceError(
            _cannot_write("plan", workdir, exc), f"{WRITABLE}, or pass --plan"
        ) from None
    log.info("demo: plan generated from the phantom in %s, signed with a demo key", workdir / PLAN)
    return plan


def demo_keys(workdir: Path) -> Path:
    """The folder of the demo's CurveZMQ keys (the edge's and one headset's, enrolled),
    made when missing (of runs making them at once, the first in place is kept). Raises
    TransportError when they cannot be written."""
    from edge.transport.security import EDGE_KEY_NAME, generate_keys

    keys_dir = workdir / KEYS
    secret = f"{EDGE_KEY_NAME}.key_secret"  # the folder is put in place whole
    if (keys_dir / secret).exists():
        return keys_dir
    try:
        own = _private_folder(workdir, ".keys-")
        try:
            generate_keys(own / KEYS)
            with _locked(workdir):
                if not (keys_dir / secret).exists():  # else another run's came first
                    _replace_folder(own / KEYS, keys_dir, own / "old")
                    log.info("demo: CurveZMQ keys for the edge and one headset in %s", keys_dir)
        finally:
            shutil.rmtree(own, ignore_errors=True)
    except OSError as exc:
        fix = f"{WRITABLE}, or set [transport] keys_dir"
        raise TransportError(_cannot_write("keys", workdir, exc), fix) from None
    return keys_dir


def _cannot_write(what: str, workdir: Path, exc: OSError) -> str:
    return f"cannot write the demo's {what} in {workdir}: {exc.strerror or exc}"


@contextlib.contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    """Held while a run puts its files in place (the kernel releases it if the run dies)."""
    with open(workdir / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
    folder, to be removed with it); under :func:`_locked`."""
    with contextlib.suppress(FileNotFoundError):
        target.rename(old)
    new.rename(target)

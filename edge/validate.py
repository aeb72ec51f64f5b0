"""The deployment checks that `edge config check` and `edge run` share, so they cannot drift.

Ranges and types are checked when the file is loaded (:mod:`edge.config`);
:func:`validate_deployment` checks what needs more than one value or the
file system: the recording and the source's playback options, the endpoints and their security
(plaintext only on loopback; ports 0..65535), the edge's CurveZMQ secret key
(mode 0600) and enrolled headset keys, the audit log's device key (mode
0600), and, when recording is on, the hospital's key it is sealed to and a
writable recordings folder. Each failure is an EdgeError: one line naming the key or file and the
fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.config import EdgeConfig, RecordingsConfig
from edge.errors import ConfigError, KeyFileError


def demo_keys_apply(config: EdgeConfig, demo_keys: bool) -> bool:
    """Whether `edge run` makes throw-away CurveZMQ keys instead of using configured ones.

    It does when asked (``demo_keys``: phantom input holds no patient data),
    security is ``curve`` and the configured folder holds no edge secret key.
    """
    t = config.transport
    return demo_keys and t.security == "curve" and not _edge_secret(t.keys_dir).exists()


def _edge_secret(keys_dir: str) -> Path:
    from edge.transport.security import EDGE_KEY_NAME

    return Path(keys_dir) / f"{EDGE_KEY_NAME}.key_secret"


def validate_deployment(
    config: EdgeConfig, *, streaming: bool = True, demo_keys: bool = False
) -> None:
    """Raise the first problem that would stop (or weaken) `edge run` with ``config``.

    ``streaming`` False skips the transport (``edge run --no-publish``);
    ``demo_keys`` accepts a missing edge key, as `edge run` makes throw-away
    ones for phantom input (:func:`demo_keys_apply`).
    """
    src = config.source
    if src.kind == "recording":
        from edge.sources.recording.index import check_recording_path

        check_recording_path(Path(src.path))  # exists, is a recording, its index reads
    if src.loop and src.kind != "recording":
        raise ConfigError(
            f"source.loop = true needs a recording, not source.kind = {src.kind!r}",
            "set source.loop = false, or play a .db3 recording",
        )
    if streaming:
        _check_transport(config, demo_keys)
    if config.audit.enabled:
        from edge.keys import load_device_signing_key

        load_device_signing_key(config.audit.device_key)
    if config.recordings.enabled:
        _check_recordings(config.recordings)


def _check_recordings(rec: RecordingsConfig) -> None:
    """Recording on: a valid hospital public key to seal to, and a folder it can write."""
    from edge.keys import load_recording_public_key

    if not rec.encrypt_to:
        raise ConfigError(
            "recordings.enabled = true needs recordings.encrypt_to: the device must not keep "
            "readable recordings of patients",
            "make the hospital's key pair off the device (`edge recordings keygen --out "
            "hospital`) and set encrypt_to to hospital.pub",
        )
    try:
        load_recording_public_key(rec.encrypt_to)
    except KeyFileError as exc:
        raise ConfigError(f"recordings.encrypt_to: {exc.problem}", exc.fix) from None
    folder = Path(rec.folder)
    existing = folder  # the folder, or the nearest parent that exists (it is created)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"recordings.folder {folder} cannot be created: {existing} is not a folder",
            "set recordings.folder to a folder the edge process can write",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"recordings.folder {folder} is not writable ({existing})",
            "give the edge process's user write access, or set another recordings.folder",
        )


def _check_transport(config: EdgeConfig, demo_keys: bool) -> None:
    from edge.transport.security import ServerSecurity, check_plaintext_allowed, endpoint_host

    t = config.transport
    for endpoint in (t.publish_endpoint, t.service_endpoint):
        endpoint_host(endpoint)  # well formed, port 0..65535 or *
        check_plaintext_allowed(endpoint, t.security)
    if t.security == "curve" and not demo_keys_apply(config, demo_keys):
        ServerSecurity.from_keys_dir(t.keys_dir)  # secret key 0600, enrolled headset keys

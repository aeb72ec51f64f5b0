"""Enrolment changes while the edge runs: the enrolled folder watched.

:class:`FolderWatch` keeps the enrolment in force (:class:`EnrolledKeys`, the one
set the ZAP authenticator, the command service and the subscription gate read) equal to the enrolled
folder: each :meth:`FolderWatch.check` compares the folder's entries (name, inode,
size, modification time: no file is read unless one of them changed) with the last
look and, on a difference, reloads every key file and reports what was added and
what was removed (:class:`EnrolmentChange`). A file that is not a usable key is a
warning naming it (:func:`edge.transport.security.load_enrolled_names`): it admits
nobody and never revokes another headset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edge.transport.security import EnrolledKeys, EnrolmentChange, load_enrolled_names

log = logging.getLogger(__name__)

MAX_ENROLLED_FILES = 1024  # entries looked at in the enrolled folder; more is refused


class FolderWatch:
    """Keeps an :class:`EnrolledKeys` equal to the ``.key`` files of one folder."""

    def __init__(
        self, folder: str | Path, keys: EnrolledKeys, max_files: int = MAX_ENROLLED_FILES
    ) -> None:
        self.folder = Path(folder)
        self.keys = keys
        self.max_files = max_files
        self._seen: tuple[tuple[str, int, int, int], ...] | None = self._entries()
        self._too_many_logged = False

    def _entries(self) -> tuple[tuple[str, int, int, int], ...] | None:
        """(name, inode, size, mtime) of each ``*.key`` entry, sorted; None when unreadable.

        A missing folder has no entries: every key it held is withdrawn.
        """
        out: list[tuple[str, int, int, int]] = []
        try:
            with os.scandir(self.folder) as it:
                for count, entry in enumerate(it):
                    if count >= self.max_files:
                        if not self._too_many_logged:
                            log.warning(
                                "enrolled folder %s has more than %d entries: enrolment "
                                "unchanged until it has fewer",
                                self.folder,
                                self.max_files,
                            )
                            self._too_many_logged = True
                        return None
                    if not entry.name.endswith(".key"):
                        continue
                    try:
                        st = entry.stat()
                    except OSError:  # removed between listing and stat: absent
                        continue
                    out.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            return ()
        except OSError as exc:
            log.warning(
                "cannot read the enrolled folder %s: %s; enrolment unchanged", self.folder, exc
            )
            return None
        self._too_many_logged = False
        return tuple(sorted(out))

    def check(self) -> EnrolmentChange:
        """Look at the folder once; the change made to the enrolment (empty: none)."""
        entries = self._entries()
        if entries is None or entries == self._seen:
            return EnrolmentChange()
        self._seen = entries
        names = load_enrolled_names(self.folder) if entries else {}
        change = self.keys.replace(names, {name[: -len(".key")] for name, *_ in entries})
        for name in change.added.values():
            log.info("headset %s enrolled while running", name)
        for name, reason in change.removed.values():
            log.warning("headset %s revoked: %s", name, reason)
        return change

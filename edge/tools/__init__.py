"""Tracked instruments: definition files, marker detection and pose, state, navigation.

A tool is a rigid body carrying printed ArUco markers (``hardware/tools/NAME.toml``,
:mod:`.definition`); :mod:`.sheet` prints them at true scale; :mod:`.pose` finds a
tool's pose in a frame and :mod:`.stage` runs it per frame, beside face tracking
(:mod:`.beside`). See docs/tools.md.
"""

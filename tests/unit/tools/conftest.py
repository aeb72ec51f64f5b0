"""Phantom frames of the tool scenarios, rendered once per session (with ground truth)."""

from __future__ import annotations

import pytest

from edge.config import PhantomConfig
from edge.frames import Frame
from edge.sources.phantom import PhantomSource


def render(scenario: str, frames: int, repo_root) -> list[Frame]:
    source = PhantomSource(
        scenario, frames=frames, config=PhantomConfig(), tools_dir=str(repo_root / "hardware/tools")
    )
    with source:
        return list(source)


@pytest.fixture(scope="session")
def occluded_frames(repo_root) -> list[Frame]:
    """`tool-occluded`: the guide approaching the trajectory, hidden by a hand at times."""
    return render("tool-occluded", 100, repo_root)


@pytest.fixture(scope="session")
def pointer_frames(repo_root) -> list[Frame]:
    """`pointer-touch`: the flat pointer touching three points of the face in turn."""
    return render("pointer-touch", 45, repo_root)

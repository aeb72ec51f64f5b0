"""Named anatomical landmarks and the face-model landmark each one is taken from.

The plan's landmarks (3D Slicer markups) are named with these names; the
tracker's 468-point face model gives the same points by index. Indices refer
to the MediaPipe face mesh topology (subject's left/right, not the image's).
See docs/plan-format.md.
"""

from __future__ import annotations

# name -> face-model landmark index
LANDMARK_INDEX: dict[str, int] = {
    "nasion": 168,  # deepest point of the nasal bridge, between the eyes
    "pronasale": 1,  # nose tip
    "subnasale": 2,  # where the columella meets the upper lip
    "endocanthion_right": 133,  # inner corner of the right eye
    "endocanthion_left": 362,
    "exocanthion_right": 33,  # outer corner of the right eye
    "exocanthion_left": 263,
    "cheilion_right": 61,  # right mouth corner
    "cheilion_left": 291,
    "pogonion": 175,  # most anterior point of the chin (midline)
}

# Landmarks that move with expression (eyes, mouth): registration weights
# them down or leaves them out.
MOBILE_LANDMARKS = frozenset({"cheilion_right", "cheilion_left", "pogonion"})

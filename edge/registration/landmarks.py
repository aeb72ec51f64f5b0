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

# Closed contours (face-model indices, in order) of the parts of the face that
# move on their own. The surface registration leaves the pixels inside them
# (enlarged a little, see edge/registration/cloud.py) out of its depth cloud.
EYE_RIGHT_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_LEFT_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
LIPS_OUTER_CONTOUR = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    409,
    270,
    269,
    267,
    0,
    37,
    39,
    40,
    185,
)

# Face-model landmarks whose convex hull is the rigid upper face: the upper face
# oval (forehead and temples, down to the tragus level), the zygomas below the
# orbital rims, the alar base and the nose tip. The lips, jaw and lower cheeks
# (which move with jaw opening and smiling, and which a drape from below covers
# first) lie outside it. The surface registration samples its cloud here.
RIGID_FACE_HULL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323,  # forehead and temple, subject's left
    109, 67, 103, 54, 21, 162, 127, 234, 93,  # forehead and temple, subject's right
    345, 280, 327,  # left zygoma, upper cheek, alar base
    116, 50, 98,  # right zygoma, upper cheek, alar base
    1,  # nose tip
)  # fmt: skip

# The rigid face's anatomical regions, each named by the face-model landmark at its
# centre: a pixel of the surface cloud belongs to the region whose centre is nearest
# in the image. The registration reports which regions its fit rests on, and its TRE
# estimate asks how far the pose moves when any one of them is left out.
RIGID_REGIONS: dict[str, int] = {
    "forehead": 151,
    "right temple": 54,
    "left temple": 284,
    "nose": 195,  # dorsum, with the bridge and the tip
    "right cheekbone": 116,
    "left cheekbone": 345,
}

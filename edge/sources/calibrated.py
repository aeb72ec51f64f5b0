"""A source whose frames carry the device's own calibrated intrinsics.

The edge process looks up the camera's calibration (``edge calibrate
intrinsics`` writes it under ``calibration/devices/SERIAL/``) and, when one
matches, every frame is passed on with those intrinsics instead of the
factory ones. What is used, or why nothing is, is decided in ``edge.app``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edge.frames import DistortionModel, Frame, FrameSource, Intrinsics
from edge.sources.wrapped import WrappedSource


def intrinsics_from_calibration(parameters: dict[str, Any]) -> Intrinsics:
    """The :class:`Intrinsics` in an intrinsics calibration result's ``parameters``."""
    d = parameters.get("distortion", {})
    coeffs = tuple(float(d.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3"))
    return Intrinsics(
        int(parameters["width"]),
        int(parameters["height"]),
        float(parameters["fx"]),
        float(parameters["fy"]),
        float(parameters["cx"]),
        float(parameters["cy"]),
        DistortionModel.BROWN_CONRADY if any(coeffs) else DistortionModel.NONE,
        coeffs,  # type: ignore[arg-type]
    )


class CalibratedSource(WrappedSource):
    """Wraps a source; frames of the calibrated size get ``intrinsics``, others pass unchanged."""

    def __init__(self, inner: FrameSource, intrinsics: Intrinsics) -> None:
        super().__init__(inner)
        self.intrinsics = intrinsics
        self.serial = getattr(inner, "serial", "")

    def _read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            return None
        size = (frame.intrinsics.width, frame.intrinsics.height)
        if size != (self.intrinsics.width, self.intrinsics.height):
            return frame
        return dataclasses.replace(frame, intrinsics=self.intrinsics)

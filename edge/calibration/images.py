"""Board photographs in a folder as a frame source, for ``edge calibrate intrinsics --images``.

Engineers who photographed the board with another tool calibrate from the
files: PNG or JPEG (also BMP and TIFF), read in name order, each checked for its
size before it is decoded. The camera's resolution is ``width`` x ``height``
when given, else the first image's; every image must have it. The files say
nothing about the lens, so frames carry no factory intrinsics worth comparing
with (``has_factory_intrinsics`` is False) and no depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import CalibrationError
from edge.files import MAX_IMAGE_FILE_BYTES, check_image_size
from edge.frames import CameraInfo, Frame, FrameSource, Intrinsics, PixelFormat

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_IMAGES = 2000


class ImageFolderSource(FrameSource):
    """Frames from the image files in ``folder`` (name order); ``serial`` names the camera
    that took them (empty when unknown). Raises CalibrationError on open for a missing or
    empty folder, and on read for an image that is unreadable or of another size."""

    name = "images"
    has_factory_intrinsics = False

    def __init__(
        self,
        folder: str | Path,
        width: int | None = None,
        height: int | None = None,
        serial: str = "",
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        if (width is None) != (height is None) or (width is not None and width <= 0):
            raise CalibrationError(
                "give the camera's resolution as both --width and --height (positive)",
                "or leave both out to take it from the images",
            )
        if height is not None and height <= 0:
            raise CalibrationError("--height must be positive", "pass the camera's resolution")
        self._size = (width, height) if width is not None and height is not None else None
        self.serial = serial
        self._files: list[Path] = []
        self._next = 0

    @property
    def frame_count(self) -> int:
        return len(self._files)

    @property
    def camera_info(self) -> CameraInfo:
        return CameraInfo("image files", self.serial)

    def _open(self) -> None:
        if not self.folder.is_dir():
            raise CalibrationError(
                f"image folder {self.folder} does not exist", "pass the folder of board photos"
            )
        files = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not files:
            raise CalibrationError(
                f"no images in {self.folder}",
                "put the board photos there as " + ", ".join(IMAGE_SUFFIXES) + " files",
            )
        if len(files) > MAX_IMAGES:
            raise CalibrationError(
                f"{len(files)} images in {self.folder}, more than {MAX_IMAGES}",
                "keep 20-60 varied views of the board",
            )
        self._files = files
        self._next = 0

    def _close(self) -> None:
        self._files = []

    def _read(self) -> Frame | None:
        import cv2

        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_IMAGE_FILE_BYTES + 1)
        except OSError as exc:
            raise CalibrationError(
                f"cannot read {path}: {exc.strerror}", "check the file"
            ) from None
        fix = "use PNG or JPEG files of the board at the camera's resolution"
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise CalibrationError(f"{path} is over {MAX_IMAGE_FILE_BYTES >> 20} MiB", fix)
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            try:
                check_image_size(data)  # before decoding: the header may claim anything
            except ValueError as exc:
                raise CalibrationError(f"{path}: {exc}", fix) from None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"{path} is not an image OpenCV can read", fix)
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (w, h)
        if (w, h) != self._size:
            raise CalibrationError(
                f"{path.name} is {w}x{h}, not {self._size[0]}x{self._size[1]}",
                "calibrate one resolution at a time (--width/--height), with unscaled images",
            )
        number = self._next
        self._next += 1
        f = float(max(w, h))  # a placeholder: the files carry no lens data
        return Frame(
            number=number,
            color=np.ascontiguousarray(image),
            color_format=PixelFormat.BGR8,
            depth=None,
            depth_scale_m=0.0,
            intrinsics=Intrinsics(w, h, f, f, (w - 1) / 2.0, (h - 1) / 2.0),
        )

"""ChArUco board definitions and printable renderings at true physical scale.

A board is described by a small TOML file (squares across and down, square and
marker size in millimetres, ArUco dictionary). The boards the project ships are
package data (``edge/calibration/boards/``), found wherever the command runs; a
site's own or re-measured boards go in ``calibration.boards_dir``, whose files
take precedence over the built-in ones of the same name.
Board coordinates follow OpenCV: origin at the top-left chessboard corner, x
to the right, y down the board, z into the board; metres.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import CalibrationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BUILTIN_BOARDS = Path(__file__).resolve().parent / "boards"
MM_PER_INCH = 25.4
PAPER_MM = {"A4": (297.0, 210.0), "A3": (420.0, 297.0), "LETTER": (279.4, 215.9)}
RULER_MM = 100.0  # length of the printed check bar
_TEXT_MM = 25.0  # strip below the board for the check bar and the dimensions
_KEYS = {"name", "squares_x", "squares_y", "square_mm", "marker_mm", "dictionary", "paper"}


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: squares across (x) and down (y), sizes in millimetres."""

    name: str
    squares_x: int
    squares_y: int
    square_mm: float
    marker_mm: float
    dictionary: str = "DICT_5X5_100"
    paper: str = ""

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise CalibrationError(
                f"board {self.name}: needs at least 3x3 squares, got "
                f"{self.squares_x}x{self.squares_y}",
                "fix squares_x/squares_y in the board file",
            )
        if not 0.0 < self.marker_mm < self.square_mm:
            raise CalibrationError(
                f"board {self.name}: marker_mm ({self.marker_mm}) must be positive and "
                f"smaller than square_mm ({self.square_mm})",
                "fix the sizes in the board file",
            )
        import cv2

        if not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationError(
                f"board {self.name}: unknown ArUco dictionary {self.dictionary!r}",
                "use one of cv2.aruco's names, e.g. DICT_5X5_100",
            )
        markers = (self.squares_x * self.squares_y) // 2
        size = int(self.dictionary.split("_")[-1]) if self.dictionary[-1].isdigit() else 0
        if size and markers > size:
            raise CalibrationError(
                f"board {self.name}: needs {markers} markers but {self.dictionary} has {size}",
                "choose a larger dictionary",
            )

    @property
    def square_m(self) -> float:
        return self.square_mm / 1000.0

    @property
    def marker_m(self) -> float:
        return self.marker_mm / 1000.0

    @property
    def width_mm(self) -> float:
        return self.squares_x * self.square_mm

    @property
    def height_mm(self) -> float:
        return self.squares_y * self.square_mm

    @property
    def corner_count(self) -> int:
        """Inner chessboard corners (the points a ChArUco view can yield)."""
        return (self.squares_x - 1) * (self.squares_y - 1)

    def cv2_board(self) -> Any:
        """The OpenCV ``cv2.aruco.CharucoBoard`` (sizes in metres)."""
        import cv2

        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary
        )

    def corners_board_m(self) -> np.ndarray:
        """(N, 3) inner corners in board coordinates (metres), indexed by ChArUco id."""
        return np.asarray(self.cv2_board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def outline_board_m(self, inset_squares: float = 0.0) -> np.ndarray:
        """(4, 3) outer chessboard corners (metres), optionally inset by some squares."""
        d = inset_squares * self.square_m
        w, h = self.width_mm / 1000.0, self.height_mm / 1000.0
        return np.array([[d, d, 0], [w - d, d, 0], [w - d, h - d, 0], [d, h - d, 0]], float)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.squares_x}x{self.squares_y} squares of {self.square_mm:g} mm, "
            f"markers {self.marker_mm:g} mm, {self.dictionary}"
        )


def known_boards(boards_dir: str | Path) -> list[str]:
    """Names of the boards in ``boards_dir`` and the built-in ones."""
    folders = [Path(boards_dir), BUILTIN_BOARDS] if str(boards_dir) else [BUILTIN_BOARDS]
    return sorted({p.stem for d in folders if d.is_dir() for p in d.glob("*.toml")})


def load_board(name_or_path: str, boards_dir: str | Path) -> BoardSpec:
    """Load a board by path to a TOML file, or by name: ``boards_dir/NAME.toml`` (relative
    to the current folder) when it exists, else the built-in board of that name.

    Raises CalibrationError naming the boards available when it is not found.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        local = Path(boards_dir) / f"{name_or_path}.toml"
        path = local if str(boards_dir) and local.is_file() else BUILTIN_BOARDS / local.name
    if not path.is_file():
        known = known_boards(boards_dir)
        raise CalibrationError(
            f"board {name_or_path!r} not found (looked in {boards_dir} and the built-in boards)",
            "known boards: " + (", ".join(known) if known else "none"),
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CalibrationError(f"cannot read board file {path}: {exc}", "fix the file") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise CalibrationError(
            f"board file {path}: unknown key(s) {', '.join(sorted(unknown))}",
            "valid keys are " + ", ".join(sorted(_KEYS)),
        )
    try:
        return BoardSpec(
            name=str(data.get("name", path.stem)),
            squares_x=int(data["squares_x"]),
            squares_y=int(data["squares_y"]),
            square_mm=float(data["square_mm"]),
            marker_mm=float(data["marker_mm"]),
            dictionary=str(data.get("dictionary", "DICT_5X5_100")),
            paper=str(data.get("paper", "")).upper(),
        )
    except KeyError as exc:
        raise CalibrationError(
            f"board file {path}: missing key {exc.args[0]!r}", "add it to the file"
        ) from None
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"board file {path}: {exc}", "fix the values") from None


def board_texture(spec: BoardSpec, px_per_mm: float, margin_mm: float = 0.0) -> np.ndarray:
    """Grey uint8 image of the board at ``px_per_mm``, with a white margin around it.

    Pixel (u, v) covers board x in [(u - m) / ppm, (u - m + 1) / ppm) mm, m the margin in px.
    """
    w = round(spec.width_mm * px_per_mm)
    h = round(spec.height_mm * px_per_mm)
    image = spec.cv2_board().generateImage((w, h), marginSize=0, borderBits=1)
    m = round(margin_mm * px_per_mm)
    if m:
        image = np.pad(image, m, constant_values=255)
    return np.ascontiguousarray(image, dtype=np.uint8)


def _page_mm(spec: BoardSpec) -> tuple[float, float]:
    if spec.paper in PAPER_MM:
        page = PAPER_MM[spec.paper]
        if spec.width_mm + 20 <= page[0] and spec.height_mm + _TEXT_MM + 5 <= page[1]:
            return page
    return spec.width_mm + 40.0, spec.height_mm + _TEXT_MM + 20.0


def _atomic_write(out: Path, write: Any) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # a page to print, not a secret (mkstemp makes it 0600)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_board_file(spec: BoardSpec, out: str | Path, dpi: int = 300) -> Path:
    """Write a printable page (PNG with DPI metadata, or PDF at exact size) with a 100 mm check bar.

    Raises CalibrationError for other extensions.
    """
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in (".png", ".pdf"):
        raise CalibrationError(f"cannot write a board as {out.name}", "use a .png or .pdf name")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    page_w, page_h = _page_mm(spec)
    px_per_mm = dpi / MM_PER_INCH
    fig = Figure(figsize=(page_w / MM_PER_INCH, page_h / MM_PER_INCH), dpi=dpi)
    left = (page_w - spec.width_mm) / 2.0
    bottom = max(_TEXT_MM, (page_h - spec.height_mm) / 2.0)
    # Axes placed in figure fractions so the board is exactly square_mm per square.
    ax = fig.add_axes(
        (left / page_w, bottom / page_h, spec.width_mm / page_w, spec.height_mm / page_h)
    )
    ax.imshow(
        board_texture(spec, px_per_mm),
        cmap="gray",
        vmin=0,
        vmax=255,
        interpolation="nearest",
        aspect="auto",
        extent=(0, spec.width_mm, spec.height_mm, 0),
    )
    ax.set_axis_off()
    overlay = fig.add_axes((0, 0, 1, 1), facecolor="none")
    overlay.set_xlim(0, page_w)
    overlay.set_ylim(0, page_h)
    overlay.set_axis_off()
    y_bar = bottom - 11.0
    overlay.plot([left, left + RULER_MM], [y_bar, y_bar], color="black", linewidth=1.5)
    for x in (left, left + RULER_MM):
        overlay.plot([x, x], [y_bar - 3, y_bar + 3], color="black", linewidth=1.5)
    overlay.text(left + RULER_MM + 4, y_bar, f"this bar is {RULER_MM:g} mm", va="center", size=9)
    overlay.text(
        left,
        y_bar - 7,
        f"{spec.describe()}  |  board {spec.width_mm:g} x {spec.height_mm:g} mm  |  "
        "print at 100 % (actual size); measure a square and the bar with a ruler",
        va="center",
        size=7,
    )

    def write(tmp: str) -> None:
        if ext == ".pdf":
            fig.savefig(tmp, format="pdf")
        else:
            fig.savefig(tmp, format="png", dpi=dpi)

    _atomic_write(out, write)
    return out

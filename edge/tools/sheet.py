"""The printable marker sheet of one or more tools (`edge tools print`), at true scale.

Each marker is printed at its size in the tool file, with a white quiet zone and its
id, one row of markers per tool, and a 100 mm check bar: print at 100 % (actual size),
measure the bar and a marker, then glue each marker onto its face of the tool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.calibration.boards import MM_PER_INCH, PAPER_MM, RULER_MM, _atomic_write
from edge.errors import ToolError
from edge.tools.definition import ToolSpec, aruco_dictionary

MARGIN_MM = 15.0
ROW_GAP_MM = 14.0  # room for the tool's name above its row
QUIET_MM = 6.0  # white gap between printed markers (cutting margin and quiet zone)


def marker_image(dictionary: str, marker_id: int, side_px: int) -> np.ndarray:
    """The printed marker, black border included, as a (side_px, side_px) uint8 image."""
    import cv2

    return np.asarray(
        cv2.aruco.generateImageMarker(aruco_dictionary(dictionary), marker_id, side_px, None, 1)
    )


def _layout(specs: tuple[ToolSpec, ...], page_w_mm: float) -> tuple[list[tuple], float]:
    """Marker boxes (spec, marker, x_mm, y_mm-from-top, size_mm) and the content height."""
    boxes: list[tuple] = []
    y = MARGIN_MM
    for spec in specs:
        y += ROW_GAP_MM
        x = MARGIN_MM
        row_h = 0.0
        for m in spec.markers:
            size = m.size_m * 1000.0
            if x + size > page_w_mm - MARGIN_MM and x > MARGIN_MM:
                x, y = MARGIN_MM, y + row_h + QUIET_MM + 5.0
                row_h = 0.0
            boxes.append((spec, m, x, y, size))
            x += size + QUIET_MM
            row_h = max(row_h, size)
        y += row_h + 5.0
    return boxes, y + 25.0


def render_tool_sheet(specs: tuple[ToolSpec, ...], out: str | Path, dpi: int = 300) -> Path:
    """Write the sheet as PNG (with DPI metadata) or PDF (exact page size); A4 portrait when
    the markers fit, else a taller page. Raises ToolError for another extension or a bad dpi."""
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in (".png", ".pdf"):
        raise ToolError(f"cannot write a marker sheet as {out.name}", "use a .png or .pdf name")
    if not 72 <= dpi <= 1200:
        raise ToolError(f"dpi {dpi} is out of range", "pass --dpi between 72 and 1200")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    page_w, a4_h = PAPER_MM["A4"][1], PAPER_MM["A4"][0]
    boxes, content_h = _layout(specs, page_w)
    page_h = max(a4_h, content_h)
    fig = Figure(figsize=(page_w / MM_PER_INCH, page_h / MM_PER_INCH), dpi=dpi)
    text = fig.add_axes((0, 0, 1, 1), facecolor="none")
    text.set_xlim(0, page_w)
    text.set_ylim(page_h, 0)  # millimetres from the top
    text.set_axis_off()
    px_per_mm = dpi / MM_PER_INCH
    named: set[str] = set()
    for spec, m, x, y, size in boxes:
        if spec.name not in named:
            named.add(spec.name)
            text.text(
                MARGIN_MM,
                y - 6.0,
                f"{spec.name}  ({spec.dictionary}; glue each marker on its face: "
                f"{spec.path or 'tool file'})",
                size=7,
                va="center",
            )
        side_px = max(round(size * px_per_mm), 24)
        ax = fig.add_axes((x / page_w, 1 - (y + size) / page_h, size / page_w, size / page_h))
        ax.imshow(
            marker_image(spec.dictionary, m.id, side_px),
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
            aspect="auto",
            extent=(0, size, size, 0),
        )
        ax.set_axis_off()
        text.text(x, y + size + 2.5, f"id {m.id}, {size:g} mm", size=5, va="center")
    y_bar = page_h - 15.0
    text.plot([MARGIN_MM, MARGIN_MM + RULER_MM], [y_bar, y_bar], color="black", linewidth=1.5)
    for x in (MARGIN_MM, MARGIN_MM + RULER_MM):
        text.plot([x, x], [y_bar - 3, y_bar + 3], color="black", linewidth=1.5)
    text.text(
        MARGIN_MM + RULER_MM + 4,
        y_bar,
        f"this bar is {RULER_MM:g} mm: print at 100 % (actual size) and measure it",
        va="center",
        size=7,
    )

    def write(tmp: str) -> None:
        fig.savefig(tmp, format=ext[1:], dpi=dpi)

    _atomic_write(out, write)
    return out

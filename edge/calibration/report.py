"""PNG reports (matplotlib, Agg) and one-screen text summaries for each procedure.

Reports only draw what a procedure computed; they compute nothing new.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.calibration.depth_check import DepthCheckResult
from edge.calibration.handeye import HandEyeResult
from edge.calibration.intrinsics import IntrinsicsSolution
from edge.calibration.pivot import PivotResult
from edge.calibration.spaam import EyeCalibration

OK, BAD = "#2a7f3f", "#c0392b"


def _figure(title: str, rows: int = 2, cols: int = 2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * cols, 4.2 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(title, fontsize=13)
    return fig, axes


def _text_panel(ax: Any, text: str) -> None:
    ax.set_axis_off()
    ax.text(
        0.0,
        1.0,
        text,
        va="top",
        ha="left",
        family="monospace",
        size=8.5,
        transform=ax.transAxes,
        in_layout=False,
    )


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def verdict_line(problems: list[str]) -> str:
    if not problems:
        return "VERDICT: PASS"
    return "VERDICT: REFUSED\n" + "\n".join(f"  - {p}" for p in problems)


# --------------------------------------------------------------------------- intrinsics


def intrinsics_summary(sol: IntrinsicsSolution, problems: list[str]) -> str:
    sd = sol.std_devs
    lines = [
        f"Camera intrinsics  {sol.width}x{sol.height}, {len(sol.views)} views, model {sol.model}",
        f"  RMS reprojection error  {sol.rms_px:.3f} px   (worst view "
        f"{sol.per_view_rms_px.max():.3f} px)",
        f"  fx {sol.fx:9.2f} ± {sd.get('fx', 0):.2f} px    "
        f"fy {sol.fy:9.2f} ± {sd.get('fy', 0):.2f} px",
        f"  cx {sol.cx:9.2f} ± {sd.get('cx', 0):.2f} px    "
        f"cy {sol.cy:9.2f} ± {sd.get('cy', 0):.2f} px",
        *(f"  {k:2s} {v:+.4f} ± {sd.get(k, 0):.4f}" for k, v in sol.coefficients().items()),
    ]
    fc = sol.factory_comparison
    if fc:
        lines += [
            f"  vs factory: fx {fc['fx_diff_pct']:+.2f} %  fy {fc['fy_diff_pct']:+.2f} %  "
            f"cx {fc['cx_diff_px']:+.1f} px  cy {fc['cy_diff_px']:+.1f} px",
            f"  RMS with factory intrinsics {fc['rms_px_factory']:.3f} px -> calibrated "
            f"{sol.rms_px:.3f} px",
        ]
    if sol.board_size_ratio is not None:
        lines.append(f"  board size check (depth/pose distance)  {sol.board_size_ratio:.3f}")
    lines.append(verdict_line(problems))
    return "\n".join(lines)


def intrinsics_report(sol: IntrinsicsSolution, problems: list[str], out: str | Path) -> Path:
    fig, ax = _figure(f"Camera intrinsics: RMS {sol.rms_px:.3f} px over {len(sol.views)} views")
    idx = np.arange(len(sol.views))
    fc = sol.factory_comparison
    if fc:
        ax[0, 0].bar(
            idx - 0.2, fc["per_view_rms_px_factory"], 0.4, label="factory (before)", color="#999"
        )
    ax[0, 0].bar(idx + 0.2, sol.per_view_rms_px, 0.4, label="calibrated (after)", color=OK)
    ax[0, 0].set_xlabel("view")
    ax[0, 0].set_ylabel("RMS reprojection error (px)")
    ax[0, 0].set_title("Error per view, before and after")
    ax[0, 0].legend()
    pts = np.concatenate([v.corners_px for v in sol.views])
    res = np.concatenate(sol.residuals)
    mag = np.linalg.norm(res, axis=1)
    sc = ax[0, 1].scatter(pts[:, 0], pts[:, 1], c=mag, s=8, cmap="viridis")
    fig.colorbar(sc, ax=ax[0, 1], label="error (px)")
    ax[0, 1].set_title("Error across the image (all corners)")
    for a in (ax[0, 1], ax[1, 0]):
        a.set_xlim(0, sol.width)
        a.set_ylim(sol.height, 0)
        a.set_aspect("equal")
    scale = 0.1 * sol.width / max(float(mag.max()), 1e-6)
    ax[1, 0].quiver(
        pts[:, 0],
        pts[:, 1],
        res[:, 0] * scale,
        -res[:, 1] * scale,
        angles="xy",
        scale_units="xy",
        scale=1,
        width=0.002,
        color="#1f4e79",
    )
    ax[1, 0].set_title(f"Residual vectors (x{scale:.0f})")
    _text_panel(ax[1, 1], intrinsics_summary(sol, problems))
    return _save(fig, out)


def collection_report(spec: Any, collector: Any, problem: str, out: str | Path) -> Path:
    """The report of a collection that could not be solved: views kept and why frames
    were rejected, the coverage reached, and the refusal."""
    fig, ax = _figure(f"Camera intrinsics refused: {len(collector.views)} views kept", 1, 2)
    ax0 = ax[0, 0]
    ax0.imshow(collector.coverage_grid, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    ax0.set_title(f"Image coverage {collector.coverage_pct:.1f} % (boards seen, kept views)")
    ax0.set_xticks([])
    ax0.set_yticks([])
    rejected = "\n".join(f"  {n:4d} {v.value}" for v, n in collector.rejected.items()) or "  none"
    text = (
        f"Board {spec.describe()}\n"
        f"Frames seen {collector.frames_seen}, views kept {len(collector.views)}\n"
        f"Rejected:\n{rejected}\n\n" + verdict_line([problem])
    )
    _text_panel(ax[0, 1], text)
    return _save(fig, out)


# --------------------------------------------------------------------------- depth check


def depth_summary(res: DepthCheckResult) -> str:
    lines = [
        f"Depth-to-color check  {len(res.views)} views",
        f"  depth scale error      {res.scale_error_pct:+.2f} %",
        f"  depth-to-color offset  {res.offset_mm:+.1f} mm"
        + ("" if res.separated else "  (one distance: not separable from scale)"),
        f"  plane angle            {res.normal_angle_deg:.2f} deg",
        f"  depth plane RMS        {res.plane_rms_mm:.2f} mm",
        "  on-chip calibration needed: " + ("YES" if res.needs_on_chip_calibration else "no"),
        verdict_line(res.problems),
    ]
    return "\n".join(lines)


def depth_report(res: DepthCheckResult, out: str | Path) -> Path:
    fig, ax = _figure(f"Depth-to-color check: scale {res.scale_error_pct:+.2f} %")
    r_c = np.array([v.distance_color_m for v in res.views])
    r_d = np.array([v.distance_depth_m for v in res.views])
    ax[0, 0].plot(r_c, r_d, "o", color=OK if not res.problems else BAD)
    lim = (r_c.min() * 0.95, r_c.max() * 1.05)
    ax[0, 0].plot(lim, lim, "--", color="#999", label="ideal")
    ax[0, 0].set_xlabel("distance from color pose (m)")
    ax[0, 0].set_ylabel("distance from depth plane (m)")
    ax[0, 0].legend()
    ax[0, 0].set_title("Board distance: depth vs color")
    ax[0, 1].bar(range(len(r_c)), 1000 * (r_d - r_c), color="#1f4e79")
    ax[0, 1].set_xlabel("view")
    ax[0, 1].set_ylabel("depth - color (mm)")
    ax[0, 1].set_title("Difference per view")
    ax[1, 0].bar(range(len(r_c)), [v.plane_rms_mm for v in res.views], color="#999")
    ax[1, 0].set_xlabel("view")
    ax[1, 0].set_ylabel("plane fit RMS (mm)")
    ax[1, 0].set_title("Depth flatness on the board")
    _text_panel(ax[1, 1], depth_summary(res))
    return _save(fig, out)


# --------------------------------------------------------------------------- hand-eye


def handeye_summary(res: HandEyeResult, problems: list[str]) -> str:
    x = res.camera_to_hand
    lines = [
        f"Hand-eye (camera_to_hand)  {res.poses} poses, refined: {res.refined}",
        "  translation (mm)  " + "  ".join(f"{1000 * v:+8.2f}" for v in x[:3, 3]),
        f"  AX=XB residual RMS  {res.rms_rotation_deg:.3f} deg  {res.rms_translation_mm:.2f} mm",
    ]
    if len(res.heldout_translation_mm):
        lines.append(
            f"  held-out poses {res.heldout_indices}: board predicted within "
            f"{res.heldout_translation_mm.max():.2f} mm, {res.heldout_rotation_deg.max():.3f} deg"
        )
    lines.append(verdict_line(problems))
    return "\n".join(lines)


def handeye_report(res: HandEyeResult, problems: list[str], out: str | Path) -> Path:
    fig, ax = _figure(f"Hand-eye: residual RMS {res.rms_translation_mm:.2f} mm")
    ax[0, 0].hist(res.translation_residuals_mm, bins=20, color="#1f4e79")
    ax[0, 0].set_xlabel("|AX - XB| translation (mm)")
    ax[0, 0].set_title("Translation residuals (all motions)")
    ax[0, 1].hist(res.rotation_residuals_deg, bins=20, color="#999")
    ax[0, 1].set_xlabel("|AX - XB| rotation (deg)")
    ax[0, 1].set_title("Rotation residuals (all motions)")
    if len(res.heldout_translation_mm):
        pos = np.arange(len(res.heldout_indices))
        ax[1, 0].bar(pos, res.heldout_translation_mm, color=OK)
        ax[1, 0].set_xticks(pos, [str(i) for i in res.heldout_indices])
        ax[1, 0].set_xlabel("held-out pose")
        ax[1, 0].set_ylabel("board position error (mm)")
    ax[1, 0].set_title("Held-out check (solved without these poses)")
    _text_panel(ax[1, 1], handeye_summary(res, problems))
    return _save(fig, out)


# --------------------------------------------------------------------------- SPAAM


def spaam_summary(eyes: list[EyeCalibration], problems: list[str]) -> str:
    lines = ["HMD display calibration (SPAAM)"]
    for e in eyes:
        c = 1000 * e.eye_centre_m
        lines.append(
            f"  {e.eye:5s} {len(e.residuals_px):3d} alignments  RMS {e.rms_px:.2f} px  "
            f"{e.rms_deg:.3f} deg  eye at ({c[0]:+.0f}, {c[1]:+.0f}, {c[2]:+.0f}) mm"
        )
        lines += [f"    warning: {w}" for w in e.warnings]
    lines.append(verdict_line(problems))
    return "\n".join(lines)


def spaam_report(
    eyes: list[EyeCalibration],
    screens: list[tuple[int, int]],
    pixels: list[np.ndarray],
    problems: list[str],
    out: str | Path,
) -> Path:
    fig, ax = _figure("HMD display calibration (SPAAM)", rows=2, cols=len(eyes) + 1)
    for i, (e, (w, h), px) in enumerate(zip(eyes, screens, pixels, strict=True)):
        a = ax[0, i]
        r = e.residuals_px
        scale = 0.05 * w / max(float(np.abs(r).max()), 1e-6)
        a.quiver(
            px[:, 0],
            px[:, 1],
            -r[:, 0] * scale,
            r[:, 1] * scale,
            angles="xy",
            scale_units="xy",
            scale=1,
            color="#1f4e79",
            width=0.003,
        )
        a.plot(px[:, 0], px[:, 1], "o", ms=3, color=OK)
        a.set_xlim(0, w)
        a.set_ylim(h, 0)
        a.set_aspect("equal")
        a.set_title(f"{e.eye} eye: residuals on screen (x{scale:.0f})")
        b = ax[1, i]
        b.bar(range(len(e.angular_errors_deg)), e.angular_errors_deg, color="#999")
        b.set_xlabel("alignment")
        b.set_ylabel("angular error (deg)")
        b.set_title(f"{e.eye} eye: {e.rms_px:.2f} px, {e.rms_deg:.3f} deg RMS")
    _text_panel(ax[0, -1], spaam_summary(eyes, problems))
    ax[1, -1].set_axis_off()
    return _save(fig, out)


# --------------------------------------------------------------------------- pivot


def pivot_summary(res: PivotResult, problems: list[str]) -> str:
    tip = 1000 * res.tip_tool_m
    piv = 1000 * res.pivot_tracker_m
    return "\n".join(
        [
            f"Pivot calibration ({res.method})  {len(res.residuals_mm)} poses, "
            f"{int(res.inliers.sum())} used, rotation range {res.rotation_range_deg:.0f} deg",
            f"  tip in tool frame (mm)       ({tip[0]:+.2f}, {tip[1]:+.2f}, {tip[2]:+.2f})",
            f"  pivot in tracker frame (mm)  ({piv[0]:+.2f}, {piv[1]:+.2f}, {piv[2]:+.2f})",
            f"  RMS error {res.rms_mm:.3f} mm  (max {res.residuals_mm[res.inliers].max():.3f} mm)",
            verdict_line(problems),
        ]
    )


def pivot_report(res: PivotResult, poses: np.ndarray, problems: list[str], out: str | Path) -> Path:
    fig, ax = _figure(f"Pivot calibration: RMS {res.rms_mm:.3f} mm")
    colors = [OK if i else BAD for i in res.inliers]
    ax[0, 0].bar(range(len(res.residuals_mm)), res.residuals_mm, color=colors)
    ax[0, 0].set_xlabel("pose")
    ax[0, 0].set_ylabel("tip distance from pivot (mm)")
    ax[0, 0].set_title("Residual per pose (red: rejected)")
    tips = 1000 * (poses[:, :3, :3] @ res.tip_tool_m + poses[:, :3, 3] - res.pivot_tracker_m)
    ax[0, 1].scatter(tips[:, 0], tips[:, 1], c=colors, s=10)
    ax[0, 1].set_aspect("equal")
    ax[0, 1].set_xlabel("x (mm)")
    ax[0, 1].set_ylabel("y (mm)")
    ax[0, 1].set_title("Tip positions about the pivot (tracker x-y)")
    ends = 1000 * (poses[:, :3, 3] - res.pivot_tracker_m)
    ax[1, 0].scatter(ends[:, 0], ends[:, 1], c=colors, s=10)
    ax[1, 0].plot([0], [0], "k+", ms=12)
    ax[1, 0].set_aspect("equal")
    ax[1, 0].set_xlabel("x (mm)")
    ax[1, 0].set_ylabel("y (mm)")
    ax[1, 0].set_title("Tool marker positions around the pivot (+)")
    _text_panel(ax[1, 1], pivot_summary(res, problems))
    return _save(fig, out)

"""What surrounds the head: the drape, the printed photo (spoof) and the table."""

from __future__ import annotations

import numpy as np

from edge.sources.phantom.face import FaceModel
from edge.sources.phantom.render import MATERIAL_CLOTH, MATERIAL_SKIN, Surface, TexturedPlane
from edge.sources.phantom.scenarios import TheatreDraw, get_scenario, theatre_draw

TABLE_RGB = np.array([52, 96, 78], dtype=np.float32)  # theatre-green sheet
TABLE_DISTANCE_M = 1.25
A4_M = (0.210, 0.297)
DRAPE_YAW_RAD = 1.6  # the drape wraps round to just behind the ears


def head_surface(face: FaceModel) -> Surface:
    points, normals, colors = face.surface_rows()
    return Surface.from_rows(points, normals, colors, face.spacing_m, MATERIAL_SKIN)


def _drape_coordinate(face: FaceModel, points_face_m: np.ndarray, draw: TheatreDraw) -> np.ndarray:
    """Where points lie along the drape's direction, as a fraction of the face's extent:
    0 at the edge the drape comes from (chin, or the side's outermost landmark), 1 at the
    opposite one (forehead top, other side). The cloth's edge is not straight: it waves
    by up to 4 mm (randomised drapes)."""
    p = np.asarray(points_face_m, dtype=np.float64).reshape(-1, 3)
    lm = face.landmarks_m
    if draw.drape_from == "below":
        start, end, along, across = face.chin_y_m, face.forehead_y_m, p[:, 1], p[:, 0]
    else:
        xs = lm[:, 0] * draw.drape_side
        start, end = float(xs.max()), float(xs.min())
        along, across = p[:, 0] * draw.drape_side, p[:, 1]
    wave = 0.004 * np.sin(across / 0.018 + draw.drape_phase) if draw.drape_fold_m else 0.0
    return np.asarray((along + wave - start) / (end - start))


def covered_by_drape(
    face: FaceModel, points_face_m: np.ndarray, draw: TheatreDraw | None = None
) -> np.ndarray:
    """Which face-frame points lie under the drape (N,) bool (default: the `drape` scenario's)."""
    d = draw or theatre_draw(get_scenario("drape"), 0)
    p = np.asarray(points_face_m).reshape(-1, 3)
    under = _drape_coordinate(face, p, d) < d.drape_coverage
    if d.drape_from == "below":
        yaw = np.arctan2(p[:, 0], -p[:, 2])
        return under & (np.abs(yaw) < DRAPE_YAW_RAD)  # wraps round to just behind the ears
    return under & (p[:, 1] > face.forehead_y_m - 0.03)  # from the brow down, not the crown


def drape_surface(face: FaceModel, draw: TheatreDraw | None = None) -> Surface:
    """A cloth over part of the face, in the face frame: an envelope that spans the high
    points and sags between them, at least ``drape_offset_m`` off the skin (radially),
    plus folds up to ``drape_fold_m`` deep (two sinusoids across and along the face)."""
    import cv2

    d = draw or theatre_draw(get_scenario("drape"), 0)
    # Folds stretch the cloth over the grid: sample it twice as finely in both directions,
    # or the skin shows through between its samples.
    up = 2 if d.drape_fold_m else 1
    grid = face.points_m.astype(np.float32)
    h, w = grid.shape[:2]
    pts = cv2.resize(grid, (w * up, h * up), interpolation=cv2.INTER_LINEAR) if up > 1 else grid
    r = np.linalg.norm(pts, axis=-1)
    dirs = pts / r[..., None]
    # Cloth spans the high points and sags between them: a max filter then a blur.
    k = 25 * up  # samples (~20 mm)
    env = cv2.dilate(r, np.ones((k, k), np.uint8))
    env = cv2.GaussianBlur(env, (0, 0), sigmaX=8.0 * up)
    r_cloth = np.maximum(env + d.drape_offset_m / 2, r + d.drape_offset_m)
    yaw = np.broadcast_to(np.linspace(face.yaw_rad[0], face.yaw_rad[-1], w * up)[None, :], r.shape)
    pitch = np.broadcast_to(
        np.linspace(face.pitch_rad[0], face.pitch_rad[-1], h * up)[:, None], r.shape
    )
    if d.drape_fold_m:
        f = np.sin(yaw * 9.0 + d.drape_phase + 1.5 * np.sin(pitch * 4.0 + d.drape_phase))
        f2 = np.sin(pitch * 14.0 - 2.0 * d.drape_phase + 0.8 * np.sin(yaw * 6.0))
        r_cloth = r_cloth + d.drape_fold_m * (0.5 + 0.35 * f + 0.15 * f2)
    cloth = dirs * r_cloth[..., None]
    region = covered_by_drape(face, pts.reshape(-1, 3), d).reshape(r.shape)
    # Outward normals of the cloth grid.
    n = np.cross(np.gradient(cloth, axis=1), np.gradient(cloth, axis=0))
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    n[(n * cloth).sum(axis=-1) < 0] *= -1.0
    # Folds: a little shading along the yaw direction, and Lambert light from the camera.
    folds = 0.85 + 0.15 * np.sin(yaw * 23.0 + 0.7 * np.sin(yaw * 5.0))
    light = np.clip(-n[..., 2], 0.0, 1.0) * 0.5 + 0.5
    color = np.asarray(d.drape_rgb, np.float32) * (folds * light)[..., None]
    return Surface.from_rows(
        cloth[region],
        n[region],
        np.clip(color[region], 0, 255).astype(np.uint8),
        face.spacing_m * 1.2 / up,
        MATERIAL_CLOTH,
    )


def print_plane(face: FaceModel) -> tuple[TexturedPlane, np.ndarray]:
    """An A4 print of the photo at life size, and its plane-to-face transform.

    The print lies in the face frame's plane z = z(nasion), so the printed face
    is where the real face would be (flattened).
    """
    scale = face.photo_scale_m_per_px
    w_px, h_px = round(A4_M[0] / scale), round(A4_M[1] / scale)
    ox, oy = face.photo_origin_px
    # The sheet: centred on the nasion horizontally, 45 % of it above the nasion.
    left, top = round(ox - w_px / 2), round(oy - 0.45 * h_px)
    sheet = np.full((h_px, w_px, 3), 235, np.uint8)  # paper white
    ph, pw = face.photo.shape[:2]
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + w_px, pw), min(top + h_px, ph)
    if sx1 > sx0 and sy1 > sy0:
        sheet[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = face.photo[sy0:sy1, sx0:sx1]
    plane = TexturedPlane(sheet, scale, (ox - left, oy - top))
    plane_to_face = np.eye(4)
    plane_to_face[2, 3] = face.landmarks_m[168, 2]
    return plane, plane_to_face


def table_plane(seed: int = 7) -> tuple[TexturedPlane, np.ndarray]:
    """The operating table under a green sheet, behind the head, and its plane-to-camera pose."""
    import cv2

    rng = np.random.default_rng(seed)
    m_per_px = 0.004
    w, h = 700, 600  # 2.8 m x 2.4 m
    weave = rng.normal(0.0, 6.0, (h // 4, w // 4)).astype(np.float32)
    weave_full = cv2.resize(cv2.GaussianBlur(weave, (0, 0), 1.5), (w, h))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    folds = 10.0 * np.sin(xx / 37.0 + 2.0 * np.sin(yy / 90.0))
    tex = np.clip(TABLE_RGB + (weave_full + folds)[..., None], 0, 255).astype(np.uint8)
    plane = TexturedPlane(tex, m_per_px, (w / 2.0, h / 2.0))
    to_camera = np.eye(4)
    c, s = np.cos(np.radians(12.0)), np.sin(np.radians(12.0))
    to_camera[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    to_camera[:3, 3] = (0.0, 0.0, TABLE_DISTANCE_M)
    return plane, to_camera

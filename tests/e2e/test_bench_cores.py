"""`edge bench` on both cores and for the headsets (issue 15): read-ahead on and off in one
run, the runtime trial, the publish cost per extra headset, and a finer skin."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from edge import bench_cores
from edge.bench import format_report
from edge.cli import main

CORES_KEYS = {
    "read_ahead",
    "overlap_stages",
    "both_cores_fps",
    "one_core_fps",
    "both_cores_speedup",
    "both_cores_speedup_rounds",
    "end_to_end_ms_p50_both_cores",
    "end_to_end_ms_p50_one_core",
    "pipeline_ms_both_cores",
    "pipeline_ms_one_core",
    "end_to_end_ms_p50_realtime_both_cores",
    "end_to_end_ms_p50_realtime_one_core",
    "realtime_frames",
    "landmark_runtime",
    "runtime_trial",
    "publish_headsets",
    "publish_per_headset_ms",
    "publish_per_headset_to_model",
    "skin_triangles",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bench")
    config = folder / "edge.toml"
    config.write_text(
        '[tracking]\nruntime = "auto"\n[pipeline]\nread_ahead = true\noverlap_stages = true\n'
    )
    argv = ["bench", "--config", str(config), "--frames", "12", "--json"]
    out = io.StringIO()  # capsys is function-scoped; the bench runs once for the module
    # Three rounds each way, not six: the order and pairing are tests/unit/test_bench_cores.py's.
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench_cores, "FAST_ROUNDS", 3)
        code = main([*argv, "--skin-triangles", "150000"])
    assert code == 0
    return json.loads(out.getvalue())


def test_every_key_is_there_documented_and_consistent(report, repo_root):
    assert set(report) >= CORES_KEYS
    doc = (Path(repo_root) / "docs" / "benchmark.md").read_text()
    for key in CORES_KEYS:
        assert f"`{key}`" in doc, f"docs/benchmark.md does not document {key}"
    assert report["read_ahead"] is True and report["overlap_stages"] is True
    speedup = report["both_cores_fps"] / report["one_core_fps"]
    assert report["both_cores_speedup"] == pytest.approx(speedup, rel=1e-9)
    rounds = report["both_cores_speedup_rounds"]
    assert len(rounds) == 3 and all(x > 0 for x in rounds)
    assert min(rounds) - 1e-9 <= report["both_cores_speedup"] <= max(rounds) + 1e-9
    assert report["realtime_frames"] == 12
    assert report["end_to_end_ms_p50_realtime_both_cores"] > 0
    in_memory = {k: math.nan if v is None else v for k, v in report.items()}
    text = format_report(in_memory)
    assert f"x{report['both_cores_speedup']:.2f}; rounds x{min(rounds):.2f} to" in text


def test_auto_runtime_is_resolved_once_and_recorded(report):
    trial = report["runtime_trial"]
    assert set(trial["median_ms"]) == {"onnxruntime", "litert"}
    assert all(ms > 0 for ms in trial["median_ms"].values())
    assert report["landmark_runtime"] == trial["chosen"]


def test_publish_cost_per_headset_is_measured_with_real_subscribers(report):
    per = report["publish_headsets"]
    assert set(per) == {"1", "8"}
    for figures in per.values():
        assert 0.5 < figures["received_min_fraction"] <= 1.0  # every headset got the stream
        assert figures["cpu_ms_per_frame"] > 0
    extra = (per["8"]["cpu_ms_per_frame"] - per["1"]["cpu_ms_per_frame"]) / 7
    assert report["publish_per_headset_ms"] == pytest.approx(extra, rel=1e-9)
    ratio = report["publish_per_headset_ms"] / report["model_ms"]
    assert report["publish_per_headset_to_model"] == pytest.approx(ratio, rel=1e-9)


def test_the_skin_is_split_to_the_asked_size_with_the_same_accuracy(report):
    assert report["skin_triangles"] >= 150_000
    assert report["skin_triangles"] % 71_100 == 0  # the phantom's skin, split in four
    assert report["state_fractions"].get("TRACKING", 0.0) > 0.5


def test_a_skin_over_the_plan_limit_is_refused_in_one_line(capsys):
    assert main(["bench", "--frames", "2", "--skin-triangles", "2000000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_mesh_triangles" in err[0]
    assert main(["bench", "--frames", "2", "--skin-triangles", "-1"]) == 2

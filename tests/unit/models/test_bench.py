"""The benchmark's report shape (its figures are measured by `edge models bench`, not asserted)."""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.models import load_manifest
from edge.models.bench import format_table, run_bench
from edge.models.manifest import repo_models_dir

pytest.importorskip("ai_edge_litert.interpreter")


def test_bench_reports_every_case_and_the_ratio() -> None:
    manifest = load_manifest()
    report = run_bench(repo_models_dir() / "build", manifest, runs=10, threads=(1,))
    assert report["runs_per_case"] == 10
    for name in manifest.models:
        cases = report["models"][name]
        assert set(cases) == {"ort_t1", "ort_t1_nospin", "litert_t1"}
        for stats in cases.values():
            assert 0 < stats["median_ms"] <= stats["p99_ms"]
        best_ort = min(cases["ort_t1"]["median_ms"], cases["ort_t1_nospin"]["median_ms"])
        assert report["ratio"][name]["t1"] == pytest.approx(
            best_ort / cases["litert_t1"]["median_ms"], abs=1e-3
        )
    assert "ORT/LiteRT median ratio" in format_table(report)
    json.dumps(report)  # JSON-ready


def test_bench_refuses_too_few_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "bench", "--runs", "3"]) == 2
    assert "--runs must be at least 10" in capsys.readouterr().err

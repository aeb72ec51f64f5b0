"""The both-cores comparison of `edge bench`: which replays run, in which order, and how
each round's ratio is paired (known answers from stand-in replays)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edge import app, bench_cores
from edge.config import EdgeConfig

FRAMES = 300


def test_rounds_alternate_and_each_ratio_pairs_one_round(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    done = {("deterministic", False): 0, ("deterministic", True): 0}

    def replay_options(config: EdgeConfig, made: dict, folder: Path, **extra: object) -> object:
        return SimpleNamespace(config=config, extra=extra)

    def execute(options: SimpleNamespace) -> SimpleNamespace:
        cfg = options.config
        both, timing = cfg.pipeline.read_ahead, cfg.source.timing
        assert cfg.pipeline.overlap_stages is both
        calls.append((timing, both))
        if timing == "realtime":
            assert options.extra == {"frames": bench_cores.REALTIME_FRAMES}
            fps, e2e = 30.0, 5.0 if both else 6.0
        else:
            k = done[(timing, both)]  # this way's k-th replay belongs to round k
            done[(timing, both)] += 1
            fps, e2e = 200.0 * (1.0 + 0.1 * k if both else 1.0), 4.0
        summary = {
            "frames": FRAMES,
            "duration_s": FRAMES / fps,
            "fps": fps,
            "end_to_end_ms": {"p50": e2e},
            "frame_ms": {"p50": 4.0},
        }
        return SimpleNamespace(summary=summary)

    monkeypatch.setattr(app, "execute", execute)
    monkeypatch.setattr(bench_cores, "FAST_ROUNDS", 4)
    figures = bench_cores.both_cores_figures(EdgeConfig(), {}, Path("."), replay_options)

    fast = [both for timing, both in calls if timing == "deterministic"]
    paced = [both for timing, both in calls if timing == "realtime"]
    assert fast == [False, True, True, False, False, True, True, False]  # one core: False
    assert paced == [False, True, True, False]
    rounds = figures["both_cores_speedup_rounds"]
    assert rounds == pytest.approx([1.0, 1.1, 1.2, 1.3])
    both_s = sum(FRAMES / (200.0 * (1.0 + 0.1 * k)) for k in range(4))
    one_s = 4 * FRAMES / 200.0
    assert figures["both_cores_speedup"] == pytest.approx(one_s / both_s)
    assert figures["end_to_end_ms_p50_realtime_both_cores"] == 5.0
    assert figures["end_to_end_ms_p50_realtime_one_core"] == 6.0


def test_the_report_line_leaves_out_rounds_it_cannot_show() -> None:
    figures = {
        "both_cores_fps": 300.0,
        "one_core_fps": 200.0,
        "both_cores_speedup": 1.5,
        "end_to_end_ms_p50_both_cores": 5.0,
        "end_to_end_ms_p50_one_core": 4.0,
        "end_to_end_ms_p50_realtime_both_cores": 4.5,
        "end_to_end_ms_p50_realtime_one_core": 4.6,
    }
    line = bench_cores.format_cores({**figures, "both_cores_speedup_rounds": [1.2, None, 1.7]})
    assert "(x1.50; rounds x1.20 to x1.70)" in line[0]
    for nothing in ([], [None], [float("nan")]):
        line = bench_cores.format_cores({**figures, "both_cores_speedup_rounds": nothing})
        assert "(x1.50);" in line[0]

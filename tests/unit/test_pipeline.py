from edge.frames import FrameResult
from edge.pipeline import Pipeline
from support.fakes import CountingSource


class _Mark:
    name = "mark"

    def process(self, result: FrameResult) -> None:
        result.tracking = result.frame.number


class _FailOnTwo:
    name = "fragile"

    def process(self, result: FrameResult) -> None:
        if result.frame.number == 2:
            raise RuntimeError("model runtime error")
        result.registration = "ok"


def test_stages_run_in_order_and_are_timed():
    seen = []
    pipe = Pipeline(CountingSource(3), [_Mark(), _FailOnTwo()])
    n = pipe.run(on_result=seen.append)
    assert n == 3
    assert [r.tracking for r in seen] == [1, 2, 3]
    assert set(seen[0].stage_ms) == {"source", "mark", "fragile"}
    assert all(ms >= 0 for r in seen for ms in r.stage_ms.values())


def test_a_stage_error_marks_only_that_frame_failed():
    seen = []
    Pipeline(CountingSource(3), [_Mark(), _FailOnTwo()]).run(on_result=seen.append)
    assert [r.failed for r in seen] == [False, True, False]
    assert "model runtime error" in seen[1].errors[0].message
    assert seen[1].registration is None
    assert seen[2].registration == "ok"


def test_max_frames_and_early_stop():
    assert Pipeline(CountingSource(10), [_Mark()]).run(max_frames=4) == 4
    assert Pipeline(CountingSource(10), [_Mark()]).run(on_result=lambda r: r.frame.number < 2) == 2

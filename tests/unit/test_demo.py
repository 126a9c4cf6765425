"""The demo's verdict: a run passes only if every query of its workload was answered without error."""

from pipeline.demo import judge


def test_demo_passes_only_when_every_query_is_answered_without_error() -> None:
    passed = "demo passed: every query of the workload answered, none with an error"
    assert judge(True, []) == (True, [passed])
    ok, lines = judge(False, [])
    assert not ok and lines == ["demo failed: not every query was answered"]


def test_failed_queries_fail_the_demo_with_count_and_reasons() -> None:
    circuit = "llm failed: every upstream's circuit is open: {'default': 'open'}"
    failures = [(f"demo-r-{i}", circuit) for i in range(7)] + [("demo-rw2-3", "llm failed: timed out")]
    ok, lines = judge(True, failures, shown=5)
    assert not ok
    assert lines == [
        "demo failed: 8 of the workload's queries ended with an error",
        f"  7 x {circuit}: demo-r-0, demo-r-1, demo-r-2, demo-r-3, demo-r-4 and 2 more",
        "  1 x llm failed: timed out: demo-rw2-3",
    ]


def test_unanswered_and_failed_queries_are_both_reported() -> None:
    ok, lines = judge(False, [("demo-r-1", "llm failed: 500")])
    assert not ok and lines == ["demo failed: not every query was answered",
                                "demo failed: 1 of the workload's queries ended with an error",
                                "  1 x llm failed: 500: demo-r-1"]

from workers.offsets import OffsetTracker

TP = ("t", 0)


def test_commit_position_waits_for_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.finished(TP, 11)
    tracker.finished(TP, 12)
    assert tracker.to_commit() == {TP: 10}  # 10 still running: replay from 10
    tracker.finished(TP, 10)
    assert tracker.to_commit() == {TP: 13}
    assert tracker.to_commit() == {}  # nothing moved
    assert tracker.in_flight == 0


def test_partitions_are_independent_and_can_be_forgotten() -> None:
    tracker = OffsetTracker()
    tracker.started(("t", 0), 5)
    tracker.started(("t", 1), 7)
    tracker.finished(("t", 1), 7)
    assert tracker.to_commit(only={("t", 1)}) == {("t", 1): 8}
    tracker.forget({("t", 0)})
    assert tracker.in_flight == 0 and tracker.to_commit() == {}

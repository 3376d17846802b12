"""Schedules to exact counts: profiles and largest-remainder rounding, by hand."""

import pytest

from strcvit_bench.errors import SpecError
from strcvit_bench.streams.schedule import chunk_counts, largest_remainder, profile_weight
from strcvit_bench.streams.spec import TaskSchedule, parse_spec


def test_largest_remainder_hand_computed():
    # quotas 3.333.. each -> floors 3,3,3, one left goes to the first (tie -> earlier task)
    assert largest_remainder([1, 1, 1], 10) == [4, 3, 3]
    # quotas 1.5, 2.5, 6.0 -> floors 1,2,6 = 9; one left, remainders tie at .5 -> the first
    assert largest_remainder([1.5, 2.5, 6.0], 10) == [2, 2, 6]
    # quotas 0.7, 2.2, 7.1 -> floors 0,2,7 = 9; largest remainder .7 -> the first
    assert largest_remainder([0.7, 2.2, 7.1], 10) == [1, 2, 7]
    # integer counts that already sum to the total come back unchanged
    assert largest_remainder([1186, 210, 39, 120, 0, 263, 182], 2000) == [1186, 210, 39, 120, 0, 263, 182]


def test_profiles():
    n = 5
    assert [profile_weight(TaskSchedule(start=1, end=3), t, n) for t in range(n)] == [0, 1, 1, 1, 0]
    up = [profile_weight(TaskSchedule(start=0, end=3, profile="ramp_up"), t, n) for t in range(n)]
    assert up == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.0])
    down = [profile_weight(TaskSchedule(start=1, profile="ramp_down", weight=2), t, n) for t in range(n)]
    assert down == pytest.approx([0, 2.0, 1.5, 1.0, 0.5])
    per = [profile_weight(TaskSchedule(profile="periodic", period=3, duty=2), t, 7) for t in range(7)]
    assert per == [1, 1, 0, 1, 1, 0, 1]
    burst = [profile_weight(TaskSchedule(profile="burst", peak=2, width=1), t, n) for t in range(n)]
    assert burst[2] == 1.0 and burst[1] == burst[3] == pytest.approx(0.36787944) and burst[0] < 0.02


def test_counts_sum_to_chunk_size_and_follow_the_schedule(tiny_spec_data):
    spec = parse_spec(tiny_spec_data)
    counts = chunk_counts(spec)
    assert all(sum(c.values()) == spec.chunk_size for c in counts)
    assert counts[0] == {"shapes": 24}
    # chunk 1: shapes weight 1, text ramp_up over [1,2] -> 0.5 ; 24 * 2/3 = 16, 24 * 1/3 = 8
    assert counts[1] == {"shapes": 16, "text": 8}
    # chunk 2: text 1.0, aerial 1.0 -> 12 / 12
    assert counts[2] == {"text": 12, "aerial": 12}


def test_table_schedule(tiny_spec_data):
    tiny_spec_data["schedule"] = {"table": [{"shapes": 1}, {"shapes": 1, "text": 3}, {"aerial": 5}]}
    counts = chunk_counts(parse_spec(tiny_spec_data))
    assert counts == [{"shapes": 24}, {"shapes": 6, "text": 18}, {"aerial": 24}]


def test_empty_chunk_is_an_error(tiny_spec_data):
    tiny_spec_data["schedule"] = {"tasks": {"shapes": {"start": 0, "end": 0}, "text": {"start": 2}}}
    with pytest.raises(SpecError, match="chunk 1 has no active task"):
        chunk_counts(parse_spec(tiny_spec_data))

"""The builder's block prefetch: blocks drawn in the announced order, a bounded number ahead,
none twice, and what the plan did not foresee drawn on demand."""

from __future__ import annotations

import math
from concurrent.futures import Future

from strcvit_bench.data.sources.builtin.prefetch import BLOCK, MAX_AHEAD, BlockPrefetch, blocks_ahead
from strcvit_bench.streams import builder
from strcvit_bench.streams.spec import parse_spec


class Recorder:
    """A `draw` that records each call and answers at once with the block's row indices."""

    def __init__(self):
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, source, split, start, n) -> Future:
        self.calls.append((source, split, start))
        future: Future = Future()
        future.set_result([(source, split, i) for i in range(start, start + n)])
        return future


def test_blocks_are_drawn_in_the_announced_order_a_bounded_number_ahead_none_twice():
    draw = Recorder()
    prefetch = BlockPrefetch(draw, ahead=3)
    prefetch.expect("a", "test", 70)  # blocks 0, 32, 64 of a/test
    prefetch.expect("b", "test", 10)  # block 0 of b/test
    prefetch.expect("a", "train", 40)  # blocks 0, 32 of a/train
    prefetch.expect("a", "test", 30)  # rows 70..99: block 64 is announced already, 96 is new
    plan = [("a", "test", 0), ("a", "test", 32), ("a", "test", 64), ("b", "test", 0),
            ("a", "train", 0), ("a", "train", 32), ("a", "test", 96)]
    assert draw.calls == plan[:3]  # three ahead, no more
    assert prefetch.block("a", "test", 0) == [("a", "test", i) for i in range(BLOCK)]
    assert draw.calls == plan[:4]  # taking one lets the next planned one go
    for start in (32, 64, 96):  # 96 is taken before the plan reaches it: drawn on demand
        prefetch.block("a", "test", start)
        assert len(prefetch.in_flight) <= 3
    for key in plan[3:6]:
        prefetch.block(*key)
    assert draw.calls == plan  # in the plan's order, and 96 not drawn again when the plan got there
    assert not prefetch.in_flight and not prefetch.planned
    # a block the plan did not foresee (a feed that dropped rows needs more): drawn on demand
    assert prefetch.block("b", "test", 32) == [("b", "test", i) for i in range(32, 32 + BLOCK)]
    assert draw.calls[-1] == ("b", "test", 32) and len(draw.calls) == len(plan) + 1


def test_blocks_ahead_keep_workers_busy_and_bound_the_memory_held():
    assert blocks_ahead(2, 48) == MAX_AHEAD  # small images: the cap
    assert blocks_ahead(2, 1024) == 4  # large ones: two per worker, no more
    assert 4 < blocks_ahead(2, 224) < MAX_AHEAD  # 64 MiB of pixels: 14 blocks of 224 px rows


def test_a_build_draws_the_blocks_it_takes_and_no_more(tmp_path, tiny_spec_data, monkeypatch):
    calls: list[tuple[object, str, int]] = []
    real = builder.pool_draw

    def counting(executor):
        draw = real(executor)

        def wrapped(source, split, start, n):
            calls.append((source, split, start))
            return draw(source, split, start, n)
        return wrapped

    monkeypatch.setattr(builder, "pool_draw", counting)
    spec = parse_spec(tiny_spec_data)
    manifest = builder.build_stream(spec, tmp_path / "s", workers=2)
    taken: dict[tuple[str, str], int] = {}
    for t in spec.tasks:
        taken[(t.name, "test")] = t.test_size
    for c in manifest["chunks"]:
        for name, n in c["counts"].items():
            taken[(name, "train")] = taken.get((name, "train"), 0) + n
    assert len(calls) == len(set(calls)) == sum(math.ceil(n / BLOCK) for n in taken.values())


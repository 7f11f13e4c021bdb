"""Locality-aware shards and their placement (issue 11): partitions, tiles kept together,
rendezvous placement that is stable, bounded and lists every location for failover."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from flight_server.engine._locality import place_shards, shard_key, shard_members


@pytest.mark.parametrize(("n", "count"), [(0, 1), (0, 3), (1, 4), (4, 3), (17, 4), (500, 7),
                                          (1000, 64)])
def test_shards_partition_the_chips_in_ordinal_order(n: int, count: int) -> None:
    rng = random.Random(n * 31 + count)
    keys = [rng.randrange(max(1, n // 3)) for _ in range(n)]
    parts = shard_members(keys, count)
    assert len(parts) == count
    assert sorted(p for part in parts for p in part) == list(range(n))
    for part in parts:
        assert part == sorted(part)
    if n >= count:
        assert all(parts), "no shard left empty while there are chips enough"
        # Each cut moves at most a quarter of a shard from its ideal place.
        reach = n // (4 * count)
        for k, part in enumerate(parts):
            ideal = (k + 1) * n // count - k * n // count
            assert abs(len(part) - ideal) <= 2 * reach + 1, [len(p) for p in parts]


def test_chips_of_one_tile_stay_in_one_shard() -> None:
    # 40 tiles of 25 chips each, in a scattered order: 4 shards cut at tile changes.
    rng = random.Random(1)
    keys = [k for k in range(40) for _ in range(25)]
    rng.shuffle(keys)
    parts = shard_members(keys, 4)
    owner: dict[int, set[int]] = {}
    for s, part in enumerate(parts):
        for p in part:
            owner.setdefault(keys[p], set()).add(s)
    assert all(len(v) == 1 for v in owner.values()), "a tile's chips straddle shards"
    assert [len(p) for p in parts] == [250] * 4


def test_contiguous_slices_would_split_tiles() -> None:
    # The reason for locality: the same keys cut as ordinal slices spread tiles over shards.
    rng = random.Random(1)
    keys = [k for k in range(40) for _ in range(25)]
    rng.shuffle(keys)
    slices = [range(i * 250, (i + 1) * 250) for i in range(4)]
    split = sum(1 for k in set(keys) if len({i for i, r in enumerate(slices)
                                             for p in r if keys[p] == k}) > 1)
    assert split > 30


def test_placement_is_stable_bounded_and_lists_every_location() -> None:
    locations = [f"grpc://10.0.0.{i}:8815" for i in range(3)]
    keys = [random.Random(k).getrandbits(60) for k in range(30)]
    places = place_shards(keys, locations)
    assert places == place_shards(keys, locations), "the same plan lands on the same places"
    assert places == place_shards(keys, list(reversed(locations))), "order of peers is moot"
    for where in places:
        assert sorted(where) == sorted(locations)
    load = Counter(where[0] for where in places)
    assert set(load) == set(locations) and max(load.values()) == 10  # ceil(30 / 3): balanced


def test_a_lost_location_moves_mostly_its_own_shards() -> None:
    # Rendezvous hashing: removing a replica re-places the shards it held, each on the
    # first of its failover locations with room; the others keep their place unless
    # bounded load gives their location to a shard that weighs it higher.
    locations = [f"grpc://r{i}:8815" for i in range(8)]
    kept = moved_to_failover = others = lost_shards = 0
    for trial in range(200):
        keys = [random.Random(trial * 7 + k).getrandbits(60) for k in range(3)]
        before = place_shards(keys, locations)
        lost = before[0][0]
        after = place_shards(keys, [loc for loc in locations if loc != lost])
        for b, a in zip(before, after, strict=True):
            assert a[0] != lost and sorted(a) == sorted(x for x in b if x != lost)
            if b[0] == lost:
                lost_shards += 1
                moved_to_failover += a[0] in b[1:3]
            else:
                others += 1
                kept += a[0] == b[0]
    assert kept >= 0.9 * others, (kept, others)
    assert moved_to_failover >= 0.9 * lost_shards, (moved_to_failover, lost_shards)


def test_single_location_and_empty_shards() -> None:
    assert place_shards([1, 2], ["grpc://a:1"]) == [["grpc://a:1"], ["grpc://a:1"]]
    assert place_shards([1], []) == [[]]
    assert shard_key([5, 3, 9], [0, 2]) == 5 and shard_key([5], []) == -1

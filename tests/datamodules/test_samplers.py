"""Resumable training sampler and exact DDP evaluation sampler."""

import pickle

import pytest

from datamodules.samplers import EpochIndex, ResumableShuffleSampler, ShardedEvalSampler


def test_order_is_a_function_of_seed_and_epoch():
    a, b = ResumableShuffleSampler(20, seed=7), ResumableShuffleSampler(20, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert sorted(a) == list(range(20))
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(ResumableShuffleSampler(20, seed=8)) != list(ResumableShuffleSampler(20, seed=7))


def test_resume_skips_exactly_the_samples_already_seen_once():
    full = ResumableShuffleSampler(20, seed=1)
    full.set_epoch(2)
    order = list(full)
    resumed = ResumableShuffleSampler(20, seed=1)
    resumed.resume(epoch=2, samples_done=8)
    assert resumed.epoch == 2
    assert list(resumed) == order[8:]
    assert list(resumed) == order  # the skip applies to the resumed epoch only


def test_resume_at_the_end_of_an_epoch_starts_the_next():
    s = ResumableShuffleSampler(10, seed=1)
    s.resume(epoch=4, samples_done=10)
    assert s.epoch == 5 and len(list(s)) == 10


def test_indices_carry_their_epoch_through_pickling():
    s = ResumableShuffleSampler(6, seed=0)
    s.set_epoch(9)
    first = next(iter(s))
    assert isinstance(first, EpochIndex) and first.epoch == 9
    copy = pickle.loads(pickle.dumps(first))  # DataLoader workers receive pickled indices
    assert copy == first and copy.epoch == 9 and ["a", "b", "c", "d", "e", "f"][copy] == "abcdef"[int(first)]


@pytest.mark.parametrize("length,world", [(9, 2), (10, 3), (4, 4)])
def test_training_shards_are_disjoint_covering_and_equal_length(length, world):
    shards = [list(ResumableShuffleSampler(length, seed=5, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank makes the same number of steps
    assert set().union(*map(set, shards)) == set(range(length))
    assert sum(map(len, shards)) - length < world  # padding: fewer than one repeat per rank


@pytest.mark.parametrize("length,world", [(9, 2), (10, 3), (2, 2)])
def test_evaluation_shards_count_every_image_exactly_once(length, world):
    shards = [list(ShardedEvalSampler(length, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(ShardedEvalSampler(length, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_rank_outside_the_world_is_an_error():
    with pytest.raises(ValueError, match="rank 2 outside world_size 2"):
        ShardedEvalSampler(5, rank=2, world_size=2)

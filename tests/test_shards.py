import errno
import logging

import numpy as np
import pytest
import torch
from tests.helpers.toy import toy_examples, toy_store

import quads.training.shards as shards_module
from quads.training.batches import batch_loader, global_batches, rank_share
from quads.training.shards import ShardedExamples, StoreWriteError, build_store, open_or_build


def _same_batch(a, b) -> bool:
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in ("inputs", "mask", "labels", "index"))


def test_a_store_reads_back_exactly_what_the_in_memory_set_holds(tmp_path):
    examples = toy_examples(60, 0)
    store = toy_store(tmp_path / "store", 60, 0, shard_bytes=3000)
    assert len(store.shard_bytes) > 3  # several shards, not one file per item
    assert len(list(tmp_path.joinpath("store").glob("shard-*.bin"))) == len(store.shard_bytes) < 60
    assert torch.equal(store.lengths, examples.lengths) and torch.equal(store.labels, examples.labels)
    for positions in ([0], [5, 59, 17, 3], list(range(60))):
        assert _same_batch(store.collate(positions), examples.collate(positions))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(store.in_length_order(16),
                                                               examples.in_length_order(16), strict=True))
    assert torch.equal(store.items[7], examples.items[7])


def test_time_first_float16_items_round_trip(tmp_path):
    items = [torch.randn(length, 6).half().float() for length in (3, 9, 1, 4)]
    store = build_store(tmp_path, 4, lambda positions: [items[i] for i in positions], [0, 1, 0, 1],
                        ["a", "b", "c", "d"], time_dim=0, dtype="float16")
    assert store.ids == ["a", "b", "c", "d"]
    assert all(torch.equal(store.items[i], items[i]) for i in range(4))
    assert store.disk_bytes == sum(item.numel() for item in items) * 2


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_shard_under_a_running_store_is_recomputed_and_logged(tmp_path, caplog, damage):
    examples = toy_examples(40, 0)
    store = toy_store(tmp_path / "store", 40, 0, shard_bytes=3000)
    victim = store.shard_path(1)
    if damage == "truncate":
        with open(victim, "r+b") as file:
            file.truncate(victim.stat().st_size // 2)
    else:
        victim.unlink()
    positions = np.flatnonzero(store.shard_of == 1).tolist()
    with caplog.at_level(logging.WARNING, logger="quads.training.shards"):
        batch = store.collate(positions)  # the store is already open: detected on read
    assert _same_batch(batch, examples.collate(positions))
    assert "shard-00001.bin is damaged" in caplog.text and "recomputing" in caplog.text
    assert victim.stat().st_size == store.shard_bytes[1]


def test_a_store_opened_over_a_truncated_shard_rebuilds_only_that_shard(tmp_path):
    store = toy_store(tmp_path / "store", 40, 0, shard_bytes=3000)
    untouched = store.shard_path(0).stat().st_mtime_ns
    with open(store.shard_path(2), "r+b") as file:
        file.truncate(10)
    calls = []
    examples = toy_examples(40, 0)

    def source(positions):
        calls.append(list(positions))
        return [examples.items[i] for i in positions]

    reopened = ShardedExamples(tmp_path / "store", source)
    assert calls == [np.flatnonzero(store.shard_of == 2).tolist()]
    assert reopened.shard_path(0).stat().st_mtime_ns == untouched
    assert _same_batch(reopened.collate(range(40)), examples.collate(range(40)))


def test_a_full_disk_names_the_folder_and_the_space_and_keeps_nothing_half_written(tmp_path, monkeypatch):
    examples = toy_examples(40, 0)
    real_open = open
    opened = {"n": 0}

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def open_filling_the_disk(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".tmp"):
            opened["n"] += 1
            if opened["n"] == 3:  # two shards fit, the third does not
                return FullDisk(file)
        return file

    monkeypatch.setattr(shards_module, "open", open_filling_the_disk, raising=False)
    with pytest.raises(StoreWriteError, match=rf"no space left in {tmp_path / 'store'}.*about [\d,]+ bytes"):
        build_store(tmp_path / "store", 40, lambda p: [examples.items[i] for i in p], examples.labels, [],
                    time_dim=1, shard_bytes=3000)
    monkeypatch.undo()
    leftovers = sorted(path.name for path in (tmp_path / "store").iterdir())
    assert not any(name.endswith(".tmp") or name.startswith("index") for name in leftovers)
    rebuilt = open_or_build(tmp_path / "store", 40, lambda p: [examples.items[i] for i in p], examples.labels, [],
                            time_dim=1, shard_bytes=3000)  # no index: the store is written again, not trusted
    assert _same_batch(rebuilt.collate(range(40)), examples.collate(range(40)))


def test_the_loader_yields_the_seeded_order_with_or_without_workers(tmp_path):
    store = toy_store(tmp_path / "store", 50, 0)
    lengths = store.lengths
    batches = global_batches(50, 8, seed=3, epoch=2, lengths=lengths)
    assert all(torch.equal(a, b) for a, b in zip(batches, global_batches(50, 8, seed=3, epoch=2, lengths=lengths),
                                                 strict=True))
    expected = [store.collate(batch) for batch in batches]
    for workers in (0, 1):
        loaded = list(batch_loader(store, batches, workers=workers))
        assert len(loaded) == len(expected)
        assert all(_same_batch(a, b) for a, b in zip(loaded, expected, strict=True))


def test_ddp_ranks_read_disjoint_shares_that_cover_each_global_batch(tmp_path):
    store = toy_store(tmp_path / "store", 50, 0)
    batches = global_batches(50, 8, seed=0, epoch=1, world_size=3)
    shares = [list(batch_loader(store, batches, rank=rank, world_size=3)) for rank in range(3)]
    for step, global_batch in enumerate(batches):
        read = [shares[rank][step].index.tolist() for rank in range(3)]
        every = [position for share in read for position in share]
        assert sorted(every) == sorted(global_batch.tolist())  # covering
        assert len(set(every)) == len(global_batch)  # disjoint
        assert read[1] == rank_share(global_batch, 1, 3).tolist()

"""Training blocks over token shards: order, epochs, rank split, saved state, hash checks on
resume, and adding data mid-run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pretrain.data import BlockLoader, DataStateError, write_token_folder

SEQ = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer, demo_texts):
    """Two data folders with different documents and the same tokenizer."""
    root = tmp_path_factory.mktemp("pretrain_data")
    a = write_token_folder(root / "a", tiny_tokenizer, demo_texts[:300], num_shards=2)
    b = write_token_folder(root / "b", tiny_tokenizer, demo_texts[300:420], num_shards=1)
    return a, b


def _take(loader, steps, per_step=8):
    return [loader.next_ids(per_step) for _ in range(steps)]


def test_blocks_are_contiguous_shard_slices(folders):
    a, _ = folders
    loader = BlockLoader.fresh(a, SEQ, seed=0)
    manifest = json.loads((a / "manifest.json").read_text())
    raw = np.fromfile(a / manifest["shards"][1]["file"], dtype="<u2")
    first = loader.shards[1]["first_block"]
    toks = loader.tokens(np.array([first, first + 3]))
    assert toks.shape == (2, SEQ + 1)
    assert toks[0].tolist() == raw[:SEQ + 1].tolist()
    assert toks[1].tolist() == raw[3 * SEQ:4 * SEQ + 1].tolist()


def test_every_block_once_per_epoch_and_a_new_order_next_epoch(folders):
    loader = BlockLoader.fresh(folders[0], SEQ, seed=3)
    n = loader.num_blocks
    ids = loader.next_ids(n)
    assert sorted(ids.tolist()) == list(range(n)) and loader.epoch == 0
    nxt = loader.next_ids(n)
    assert loader.epoch == 1 and sorted(nxt.tolist()) == list(range(n))
    assert not np.array_equal(ids, nxt)
    assert not np.array_equal(ids, np.arange(n))  # shuffled


def test_order_is_deterministic_and_seeded(folders):
    a = _take(BlockLoader.fresh(folders[0], SEQ, seed=0), 5)
    b = _take(BlockLoader.fresh(folders[0], SEQ, seed=0), 5)
    c = _take(BlockLoader.fresh(folders[0], SEQ, seed=1), 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_ranks_split_a_step_into_disjoint_sets():
    """The trainer gives rank r positions r, r+W, ... of a step's ids: same union for any W."""
    ids = np.arange(100, 112)
    for world in (1, 2, 3, 4):
        parts = [ids[r::world] for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == ids.tolist()


def test_state_round_trip_continues_the_same_sequence(folders, tmp_path):
    loader = BlockLoader.fresh(folders[0], SEQ, seed=0)
    _take(loader, 4)
    loader.save(tmp_path)
    expected = _take(loader, 6)
    restored = BlockLoader.load(tmp_path, SEQ, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(expected, _take(restored, 6)))


def test_changed_shard_on_resume_names_the_file(folders, tmp_path, tiny_tokenizer, demo_texts):
    data = write_token_folder(tmp_path / "d", tiny_tokenizer, demo_texts[:100], num_shards=2)
    loader = BlockLoader.fresh(data, SEQ, seed=0)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    loader.save(ckpt)
    shard = data / "shards" / "shard_00001.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1  # same size, different content
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataStateError, match="shard changed since the checkpoint: .*shard_00001.bin"):
        BlockLoader.load(ckpt, SEQ, seed=0)
    shard.unlink()
    with pytest.raises(Exception, match="shard missing: .*shard_00001.bin"):
        BlockLoader.load(ckpt, SEQ, seed=0)


def test_add_data_mixes_new_blocks_into_the_remainder_only(folders, tmp_path):
    a, b = folders
    loader = BlockLoader.fresh(a, SEQ, seed=0)
    n_old = loader.num_blocks
    trained = np.concatenate(_take(loader, 10))
    loader.save(tmp_path)
    resumed = BlockLoader.load(tmp_path, SEQ, seed=0)
    added = resumed.add_data(b, step=10)
    assert added == resumed.num_blocks - n_old > 0
    assert np.array_equal(resumed.order[:resumed.cursor], trained)      # what was trained stays
    rest = resumed.next_ids(len(resumed.order) - resumed.cursor)
    assert resumed.epoch == 0
    whole_epoch = np.concatenate([trained, rest])
    assert len(set(whole_epoch.tolist())) == len(whole_epoch) == resumed.num_blocks  # nothing twice
    new = set(range(n_old, resumed.num_blocks))
    assert not new & set(trained.tolist())                               # new only after the resume
    positions = [i for i, x in enumerate(rest.tolist()) if x in new]
    assert positions[0] < len(rest) // 2 < positions[-1]                 # mixed in, not appended
    assert resumed.tokens(np.array([n_old]))[0].tolist() == \
        np.fromfile(b / "shards" / "shard_00000.bin", dtype="<u2")[:SEQ + 1].tolist()
    # The addition is part of the saved state: a later resume checks b's shards too.
    resumed.save(tmp_path / "later")
    again = BlockLoader.load(tmp_path / "later", SEQ, seed=0)
    assert again.num_blocks == resumed.num_blocks and again.add_data(b, step=20) == 0


def test_add_data_refuses_a_shard_already_in_the_run(folders, tmp_path, tiny_tokenizer, demo_texts):
    a, _ = folders
    dup = write_token_folder(tmp_path / "dup", tiny_tokenizer, demo_texts[:300], num_shards=2)  # = a's shards
    loader = BlockLoader.fresh(a, SEQ, seed=0)
    with pytest.raises(DataStateError, match="shard already in this run: .*dup/shards/shard_00000.bin"):
        loader.add_data(dup, step=1)


def test_add_data_refuses_another_tokenizer(folders, tmp_path, demo_texts):
    from data_recipes.tokenizer import build_tokenizer
    other = build_tokenizer(demo_texts[:200], vocab_size=300)
    c = write_token_folder(tmp_path / "c", other, demo_texts[500:560], num_shards=1)
    loader = BlockLoader.fresh(folders[0], SEQ, seed=0)
    with pytest.raises(DataStateError, match="tokenizer"):
        loader.add_data(c, step=1)

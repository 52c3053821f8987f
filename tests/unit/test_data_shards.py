"""Shard write/read round trip (token exact), shard rollover, and a shard changed after its manifest."""
import numpy as np
import pytest

from core.runs import RunError, atomic_write_json
from data_recipes.shards import ShardWriter, iter_documents, open_shards


def _write(tmp_path, docs, limit, dtype="uint16"):
    w = ShardWriter(tmp_path / "shards", dtype, limit, rel_to=tmp_path)
    # two batches, so rollover also happens across add() calls
    for part in (docs[:3], docs[3:]):
        toks = np.concatenate(part)
        w.add(toks, np.array([len(d) for d in part]))
    entries = w.close()
    atomic_write_json(tmp_path / "manifest.json", {"stage": "data", "dtype": dtype, "shards": entries})
    return entries


def test_round_trip_token_exact_with_rollover(tmp_path):
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, 60000, size=n), 0).astype(np.int64) for n in (5, 17, 3, 40, 1, 9, 22)]
    entries = _write(tmp_path, docs, limit=20)
    assert [e["num_tokens"] for e in entries] == [24, 45, 35]     # whole documents, new shard once >= 20
    assert sum(e["num_docs"] for e in entries) == len(docs)
    got = list(iter_documents(tmp_path, verify_hash=True))
    assert len(got) == len(docs) and all(np.array_equal(a, b) for a, b in zip(got, docs))


def test_uint32_for_big_vocab(tmp_path):
    docs = [np.array([70000, 5, 0]), np.array([1, 2, 3, 0]), np.array([9, 0]), np.array([100000, 0])]
    _write(tmp_path, docs, limit=1000, dtype="uint32")
    manifest, arrays = open_shards(tmp_path)
    assert arrays[0].dtype.itemsize == 4 and int(arrays[0][0]) == 70000


def test_shard_changed_after_manifest_is_named(tmp_path):
    docs = [np.array([1, 2, 0]), np.array([3, 0]), np.array([4, 5, 6, 0]), np.array([7, 0])]
    entries = _write(tmp_path, docs, limit=1000)
    shard = tmp_path / entries[0]["file"]
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"shard changed after its manifest: .*shard_00000\.bin"):
        open_shards(tmp_path)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(RunError, match="bytes, manifest says"):
        open_shards(tmp_path, verify_hash=False)

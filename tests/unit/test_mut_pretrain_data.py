"""pretrain/data.py's BlockLoader against hand-made data folders (token arrays written here, no
tokenizer): block counts and token rows against the arrays, the order against numpy's PCG64 drawn
here, epoch crossings, add_data's mixing, the saved state, and every refusal naming what it refuses
(closes mutmut survivors; the equivalent ones are in tests/mutation_equivalent.md)."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from pretrain.data import BlockLoader, DataStateError, hash_files

SEQ = 8


def perm(seed, epoch, n, salt=0):
    return np.random.Generator(np.random.PCG64([seed, epoch, salt])).permutation(n)


def folder(path, shards, dtype="uint16", tok="tok-a", content="c-1"):
    """A data folder in data_recipes/shards.py's layout: one file per token list."""
    (path / "shards").mkdir(parents=True, exist_ok=True)
    entries = []
    for k, ids in enumerate(shards):
        name = f"shards/s{k}.bin"
        np.asarray(ids, dtype=np.dtype(dtype).newbyteorder("<")).tofile(path / name)
        entries.append({"file": name, "sha256": hashlib.sha256((path / name).read_bytes()).hexdigest(),
                        "num_tokens": len(ids)})
    (path / "manifest.json").write_text(json.dumps({"dtype": dtype, "shards": entries, "tokenizer_sha256": tok,
                                                    "content_hash": content}))
    return path


def tokens(n, start=0):
    return [(start + 7 * i) % 60000 for i in range(n)]


@pytest.fixture
def data(tmp_path):
    # blocks per shard (num_tokens - 1) // SEQ: 3*SEQ+1 -> 3, 4*SEQ-1 -> 3, SEQ (one short of a block) -> 0, SEQ+1 -> 1
    return folder(tmp_path / "a", [tokens(3 * SEQ + 1), tokens(4 * SEQ - 1, 1), tokens(SEQ, 2), tokens(SEQ + 1, 3)])


def test_block_counts_rows_and_dtype_follow_the_arrays(data):
    loader = BlockLoader.fresh(data, SEQ, seed=4)
    assert [s["num_blocks"] for s in loader.shards] == [3, 3, 0, 1]
    assert [s["first_block"] for s in loader.shards] == [0, 3, 6, 6] and loader.num_blocks == 7
    arrays = [tokens(3 * SEQ + 1), tokens(4 * SEQ - 1, 1), tokens(SEQ, 2), tokens(SEQ + 1, 3)]
    want = [arrays[0][b * SEQ:b * SEQ + SEQ + 1] for b in range(3)] + \
           [arrays[1][b * SEQ:b * SEQ + SEQ + 1] for b in range(3)] + [arrays[3][:SEQ + 1]]
    got = loader.tokens(np.arange(7))
    assert got.dtype == torch.int64 and got.tolist() == want
    assert loader.order.tolist() == perm(4, 0, 7).tolist()
    src = loader.state_dict()["sources"][0]
    assert src == {"path": str(data), "tokenizer_sha256": "tok-a", "added_at_step": 0, "content_hash": "c-1"}


def test_next_ids_cross_epochs_in_the_drawn_orders(data):
    loader = BlockLoader.fresh(data, SEQ, seed=2)
    want = np.concatenate([perm(2, e, 7) for e in range(4)]).tolist()
    got = np.concatenate([loader.next_ids(1), loader.next_ids(5), loader.next_ids(10), loader.next_ids(12)]).tolist()
    assert got == want[:28] and (loader.epoch, loader.cursor) == (3, 7)


def test_state_file_and_reload(data, tmp_path):
    loader = BlockLoader.fresh(data, SEQ, seed=1)
    loader.next_ids(9)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    loader.save(ckpt)
    state = json.loads((ckpt / "data_state.json").read_text())
    manifest = json.loads((data / "manifest.json").read_text())
    assert state == {"version": 1, "seq_len": SEQ, "seed": 1, "epoch": 1, "cursor": 2, "num_blocks": 7,
                     "sources": [{"path": str(data), "tokenizer_sha256": "tok-a", "added_at_step": 0,
                                  "content_hash": "c-1"}],
                     "shards": [{"source": str(data), **{k: e[k] for k in ("file", "sha256", "num_tokens")}}
                                for e in manifest["shards"]]}
    assert np.load(ckpt / "data_order.npy").tolist() == perm(1, 1, 7).tolist()
    assert sorted(p.name for p in ckpt.iterdir()) == ["data_order.npy", "data_state.json"]
    seen = []
    back = BlockLoader.load(ckpt, SEQ, seed=1, hasher=lambda paths: seen.extend(paths) or hash_files(paths))
    assert seen == [data / e["file"] for e in manifest["shards"]]      # the given hasher re-hashes every shard
    assert back.state_dict() == state and back.order.tolist() == perm(1, 1, 7).tolist()   # hashes as recorded
    assert back.next_ids(5).tolist() == perm(1, 1, 7)[2:7].tolist()
    for seq, seed in ((SEQ, 5), (SEQ + 1, 1)):
        with pytest.raises(DataStateError, match=rf"ckpt: checkpoint data state has seq_len={SEQ}, seed=1; "
                                                  rf"config has seq_len={seq}, seed={seed}"):
            BlockLoader.load(ckpt, seq, seed=seed)
    state["num_blocks"] = 9
    (ckpt / "data_state.json").write_text(json.dumps(state))
    with pytest.raises(DataStateError, match=r"ckpt: 7 blocks now, checkpoint recorded 9"):
        BlockLoader.load(ckpt, SEQ, seed=1)


def test_fresh_uses_the_given_hasher_and_refuses_a_folder_without_a_block(tmp_path):
    seen = []
    one = folder(tmp_path / "one", [tokens(SEQ + 1)])
    loader = BlockLoader.fresh(one, SEQ, seed=0, hasher=lambda paths: seen.extend(paths) or hash_files(paths))
    assert loader.num_blocks == 1 and seen == [one / "shards/s0.bin"]
    with pytest.raises(DataStateError, match=rf"none: no shard holds a full block of {SEQ + 1} tokens"):
        BlockLoader.fresh(folder(tmp_path / "none", [tokens(SEQ)]), SEQ, seed=0)


def test_add_data_mixes_with_the_sources_salt(data, tmp_path):
    loader = BlockLoader.fresh(data, SEQ, seed=3)
    loader.next_ids(4)
    before = loader.order.copy()
    new = folder(tmp_path / "b", [tokens(2 * SEQ + 1, 9)], content="c-2")
    assert loader.add_data(new, step=12) == 2
    rest = np.concatenate([before[4:], [7, 8]])
    assert loader.order.tolist() == before[:4].tolist() + rest[perm(3, 0, len(rest), salt=2)].tolist()
    assert loader.state_dict()["sources"][1] == {"path": str(new), "tokenizer_sha256": "tok-a",
                                                  "added_at_step": 12, "content_hash": "c-2"}
    assert loader.add_data(new, step=14) == 0 and len(loader.sources) == 2     # already in the run: nothing new
    assert loader.order.tolist() == before[:4].tolist() + rest[perm(3, 0, len(rest), salt=2)].tolist()
    # a folder without a full block adds nothing and keeps the order's integer ids
    assert loader.add_data(folder(tmp_path / "short", [tokens(SEQ, 11)]), step=13) == 0
    assert loader.order.dtype == np.int64 and loader.tokens(loader.next_ids(3)).shape == (3, SEQ + 1)


def test_refusals_name_what_they_refuse(data, tmp_path):
    loader = BlockLoader.fresh(data, SEQ, seed=0)
    other = folder(tmp_path / "other", [tokens(3 * SEQ, 5)], tok="tok-b")
    with pytest.raises(DataStateError, match=r"other: its tokenizer \(sha256 tok-b\) is not the run's tokenizer "
                                             r"\(tok-a\); its token ids mean other things"):
        loader.add_data(other, step=1)
    wide = folder(tmp_path / "wide", [tokens(3 * SEQ, 5)], dtype="uint32")
    with pytest.raises(DataStateError, match=r"wide: token dtype uint32 differs from the run's uint16"):
        loader.add_data(wide, step=1)
    twice = folder(tmp_path / "twice", [tokens(2 * SEQ, 5), tokens(2 * SEQ, 5)])
    with pytest.raises(DataStateError, match=r"twice/shards/s1.bin has the same content as .*twice/shards/s0.bin;"):
        loader.add_data(twice, step=1)
    changed = folder(tmp_path / "changed", [tokens(2 * SEQ, 6)])
    (changed / "shards/s0.bin").write_bytes(np.asarray(tokens(2 * SEQ, 7), dtype="<u2").tobytes())  # same size
    with pytest.raises(DataStateError, match=r"shard changed after its manifest: .*changed/shards/s0.bin "
                                             r"\(sha256 differs from .*changed/manifest.json\)"):
        loader.add_data(changed, step=1)


def _saved(data, tmp_path):
    loader = BlockLoader.fresh(data, SEQ, seed=0)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    loader.save(ckpt)
    return ckpt, json.loads((data / "manifest.json").read_text())


def _write(data, manifest):
    (data / "manifest.json").write_text(json.dumps(manifest))


def test_resume_names_a_dropped_or_added_or_renamed_shard(data, tmp_path):
    ckpt, manifest = _saved(data, tmp_path)
    _write(data, {**manifest, "shards": manifest["shards"][:1] + manifest["shards"][2:]})
    with pytest.raises(DataStateError, match=r"shard missing: .*a/shards/s1.bin was trained on by this run but "
                                             r".*a/manifest.json no longer lists it"):
        BlockLoader.load(ckpt, SEQ, seed=0)
    _write(data, {**manifest, "shards": manifest["shards"] + manifest["shards"][:1]})
    with pytest.raises(DataStateError, match=r"a: shard list changed since the checkpoint \(4 shards recorded, "
                                             r"manifest lists 5\)"):
        BlockLoader.load(ckpt, SEQ, seed=0)
    shutil.copy(data / "shards/s3.bin", data / "shards/s9.bin")
    _write(data, {**manifest, "shards": manifest["shards"][:3] + [{**manifest["shards"][3], "file": "shards/s9.bin"}]})
    with pytest.raises(DataStateError, match=r"a: shard list changed since the checkpoint "
                                             r"\(expected shards/s3.bin, manifest lists shards/s9.bin\)"):
        BlockLoader.load(ckpt, SEQ, seed=0)


def test_resume_names_a_changed_shard_with_both_hash_prefixes(data, tmp_path):
    ckpt, manifest = _saved(data, tmp_path)
    (data / "shards/s1.bin").write_bytes(np.asarray(tokens(4 * SEQ - 1, 2), dtype="<u2").tobytes())
    got = hashlib.sha256((data / "shards/s1.bin").read_bytes()).hexdigest()
    want = manifest["shards"][1]["sha256"]
    with pytest.raises(DataStateError, match=rf"shard changed since the checkpoint: .*a/shards/s1.bin \(sha256 "
                                             rf"{got[:12]}\.\.\., checkpoint recorded {want[:12]}\.\.\.\)"):
        BlockLoader.load(ckpt, SEQ, seed=0)


def test_resume_names_a_missing_data_folder(data, tmp_path):
    ckpt, _ = _saved(data, tmp_path)
    data.rename(tmp_path / "moved")
    with pytest.raises(DataStateError, match=rf"data folder missing: {data} \(trained on by the run saved in {ckpt}\)"):
        BlockLoader.load(ckpt, SEQ, seed=0)


def test_a_loader_built_empty_takes_its_blocks_from_add_data(data, tmp_path):
    """BlockLoader(seq_len, seed) starts with no blocks and an empty int64 order: add_data then
    orders exactly the new blocks, mixed with the first source's salt (1)."""
    loader = BlockLoader(SEQ, seed=5)
    assert loader.num_blocks == 0 and loader.order.dtype == np.int64 and len(loader.order) == 0
    assert loader.add_data(data, step=0) == 7
    assert loader.order.dtype == np.int64 and loader.order.tolist() == perm(5, 0, 7, salt=1).tolist()
    assert loader.next_ids(7).tolist() == perm(5, 0, 7, salt=1).tolist() and loader.cursor == 7

"""Dedupe values against independent computations (closes mutmut survivors, see tests/mutation_equivalent.md):
file identities against hashlib by hand, exact keys against blake2b, band keys against datasketch's
signature folded by hand, the key set's sizing rule, and each dedupe level switched on and off."""
import hashlib
import random

import numpy as np
import pytest

from data_recipes.clean import char_ngram_hashes
from data_recipes.dedupe import Deduper, MinHasher, U64Set, exact_key, file_identity, lsh_params

TEXT = "".join(random.Random(3).choice("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年")
               for _ in range(300))


def test_file_identity_equals_md5_by_hand(tmp_path):
    data = bytes(range(256)) * 40                               # 10240 bytes
    p = tmp_path / "f"
    p.write_bytes(data)
    assert file_identity(p) == f"md5:{hashlib.md5(data).hexdigest()}:10240"
    # a file exactly at the bound is still hashed whole
    assert file_identity(p, full_hash_max_bytes=10240) == f"md5:{hashlib.md5(data).hexdigest()}:10240"
    want = hashlib.md5(b"10240" + data[:100] + data[-100:]).hexdigest()
    assert file_identity(p, full_hash_max_bytes=10239, head_tail_bytes=100) == f"md5ht:{want}:10240"
    # head/tail window larger than the file: head = tail = the whole file, read from offset 0
    small = tmp_path / "s"
    small.write_bytes(data[:50])
    want = hashlib.md5(b"50" + data[:50] + data[:50]).hexdigest()
    assert file_identity(small, full_hash_max_bytes=10, head_tail_bytes=100) == f"md5ht:{want}:50"


def test_exact_key_is_little_endian_blake2b_64():
    for text in ("你好世界", "", "abc"):
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        assert exact_key(text) == int.from_bytes(digest, "little")


def band_keys_by_hand(text: str, threshold=0.8, num_perm=128, ngram_chars=5, seed=1) -> list[int]:
    """datasketch's MinHash of the 32-bit shingle hashes, each band folded FNV-style from a salt."""
    from datasketch import MinHash
    bands, rows = lsh_params(threshold, num_perm)
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
    m.update_batch((char_ngram_hashes(text, ngram_chars) & np.uint64(0xFFFFFFFF)).tolist())
    sig = [int(x) for x in m.hashvalues]
    out = []
    for b in range(bands):
        k = ((b + 1) * 0x9E3779B97F4A7C15) % 2 ** 64
        for j in range(rows):
            k = ((k ^ sig[b * rows + j]) * 1099511628211) % 2 ** 64
        out.append(k ^ (k >> 32))
    return out


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.5, "num_perm": 64, "ngram_chars": 3, "seed": 2}])
def test_band_keys_equal_datasketch_folded_by_hand(kwargs):
    mh = MinHasher(**kwargs)
    assert (mh.bands, mh.rows) == lsh_params(kwargs.get("threshold", 0.8), kwargs.get("num_perm", 128))
    assert mh.band_keys(TEXT).tolist() == band_keys_by_hand(TEXT, **kwargs)


def test_key_set_sizing_and_growth():
    assert U64Set(capacity=17).nbytes == 32 * 8 and U64Set(capacity=16).nbytes == 16 * 8
    assert U64Set(capacity=1).nbytes == 16 * 8 and len(U64Set()) == 0
    s = U64Set(capacity=16)
    for k in range(1, 9):                  # 8 keys: exactly half full, no growth yet
        s.add(k)
    assert s.nbytes == 16 * 8
    s.add(9)                               # the ninth doubles the table
    assert s.nbytes == 32 * 8 and len(s) == 9 and all(k in s for k in range(1, 10))


def test_key_set_probes_every_slot():
    """Keys that all land on even slots fill them; the next key must find an odd slot."""
    s = U64Set(capacity=16)
    keys = [2 * i for i in range(1, 9)]    # 2..16 -> slots 2, 4, ..., 14, 0
    for k in keys:
        assert s.add(k)
    assert s.add(18) and all(k in s for k in keys + [18]) and 20 not in s


def test_each_dedupe_level_on_and_off():
    keys = MinHasher().band_keys(TEXT)
    both = Deduper()
    assert both.check(exact_key(TEXT), keys) is None
    assert both.check(exact_key(TEXT), keys)[0] == "exact_dedupe"
    assert both.check(exact_key(TEXT + "!"), keys)[0] == "near_dedupe"
    near_only = Deduper(exact=False, near=True)
    assert near_only.check(exact_key(TEXT), keys) is None
    assert near_only.check(exact_key(TEXT), keys)[0] == "near_dedupe"     # no exact index: caught as near
    assert near_only.check(exact_key(TEXT), None) is None                  # no band keys: nothing to compare
    exact_only = Deduper(exact=True, near=False)
    assert exact_only.check(exact_key(TEXT), keys) is None
    assert exact_only.check(exact_key(TEXT + "!"), keys) is None           # near is off
    assert exact_only.check(exact_key(TEXT), keys)[0] == "exact_dedupe"
    assert exact_only.check(None, keys) is None

"""The optional datatrove backend runs our chain with the same decisions as data_recipes.build
(skipped unless datatrove, from the `data` extra, is installed)."""
import json

import pytest

from data_recipes.clean import Chain


def test_datatrove_local_executor_matches_our_chain(tmp_path):
    pytest.importorskip("datatrove", reason="optional `data` extra not installed")
    import yaml
    from data_recipes.demo_data import pretrain_corpus
    from data_recipes.scaleout import main
    texts = pretrain_corpus()["web_scrape.jsonl"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                                     for t in texts), encoding="utf-8")
    ops = [{"name": "nfkc_normalize"}, {"name": "traditional_to_simplified"}, {"name": "length_filter", "min_chars": 10},
           {"name": "special_char_filter"}, {"name": "cjk_ratio_filter"}, {"name": "repetition_filter"}]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data_root": str(tmp_path / "in"), "sources": [{"path": "*.jsonl"}],
                                      "clean": {"operators": ops}}), encoding="utf-8")
    main([str(recipe), "--executor=local", "--tasks=2", "--workers=2", f"--out={tmp_path / 'out'}"])
    got = [json.loads(l)["text"] for f in sorted((tmp_path / "out" / "cleaned").glob("*.jsonl"))
           for l in f.read_text(encoding="utf-8").splitlines()]
    chain = Chain(ops)
    want = [r[0] for r in map(chain, texts) if r[1] is None]
    assert got == want and 0 < len(want) < len(texts)

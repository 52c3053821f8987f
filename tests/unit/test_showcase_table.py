"""benchmarks/showcase.py's README block: the figures come from showcase.json, computed per seed."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import showcase  # noqa: E402


def record():
    checks = [{"stage": "sft", "check": "better than the base", "met": 1, "seeds": 2,
               "per_seed": [{"seed": 0, "met": True, "detail": "p = 0.001"}, {"seed": 1, "met": False, "detail": "p = 0.6"}]}]
    deltas = [{"seed": 1, "stage": "sft", "protocol": "chat-0shot-gen", "acc_parent": 0.204, "acc": 0.225,
               "diff": 0.021, "ci95": [-0.045, 0.0866], "p_value": 0.6123, "n": 289, "unparsed": 147}]
    runs = [{"seed": 0, "wall_s": 1268.2}, {"seed": 1, "wall_s": 5472.0}]
    return {"showcase": {"seeds": [0, 1], "checks": checks, "deltas": deltas, "runs": runs}}


def test_markdown_rows_come_from_the_record():
    lines = showcase.markdown(record()).splitlines()
    assert lines[0] == "`make showcase`, seeds 0, 1 (wall minutes per seed: 21.1, 91.2):"
    assert "| sft | better than the base | 1/2 | 0: p = 0.001; 1: p = 0.6 |" in lines
    assert "| 1 | sft | chat-0shot-gen | 20.4 -> 22.5 | +2.1 [-4.5, +8.7] | 0.61 | 147 |" in lines


def test_write_readme_replaces_only_the_block(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("head\n" + showcase.BLOCK[0] + "old\n" + showcase.BLOCK[1] + "\ntail\n", encoding="utf-8")
    monkeypatch.setattr(showcase, "README", readme)
    showcase.write_readme(record())
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("head\n" + showcase.BLOCK[0]) and text.endswith(showcase.BLOCK[1] + "\ntail\n")
    assert "old" not in text and "20.4 -> 22.5" in text
    readme.write_text("no block\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no showcase-figures block"):
        showcase.write_readme(record())
    assert readme.read_text(encoding="utf-8") == "no block\n"

"""Names are text: model, run and benchmark names with `$...$` (invalid TeX, valid TeX) build the board
and appear literally in the page, the Markdown and the plot labels; a result whose prompts did not
all fit the model's context is marked."""
import json
import xml.etree.ElementTree as ET

from leaderboard.build import main
from leaderboard.render import md_escape
from test_leaderboard_build import make_run, write_result

NAMES = ("base$\\q^^$", "a$x_1$")          # the first stopped matplotlib's mathtext; the second drew a formula
BENCH = "b$^2$"                             # a benchmark name too (it titles the per-category panel)


def svg_texts(path) -> str:
    """All text of an SVG (svg.fonttype none: labels are <text> elements), joined."""
    return "\n".join("".join(e.itertext()) for e in ET.parse(path).iter() if e.tag.endswith("text"))


def test_names_reach_page_and_plots_literally(tmp_path):
    runs = tmp_path / "runs"
    for i, name in enumerate(NAMES):
        run = make_run(runs, "pretrain", f"run{i}$y_{i}$", tokens=10**9 * (i + 1))
        cats = {"STEM": {"acc": 0.3, "n": 5}, "c$\\alpha$": {"acc": 0.4, "n": 5}}
        write_result(run / "eval", name, 0.3 + 0.1 * i, per_category=cats)
        write_result(run / "eval", name, 0.3, bench="cmmlu", split="test", n=11582, per_category=cats)
        write_result(run / "eval", name, 0.5, bench=BENCH, subset="builtin", n=40, per_category=cats)
    assert main([f"runs_root={runs}", "print_table=false"]) == 0     # plots on
    out = runs / "leaderboard"
    page = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert name in page
        assert md_escape(name) in md and "\\$" in md_escape(name)    # `$` escaped: no math in GitHub's Markdown
    assert "pretrain:run0$y_0$" in page and BENCH in page
    scaling, categories = svg_texts(out / "plots" / "acc_vs_params.svg"), svg_texts(out / "plots" / "per_category.svg")
    for name in NAMES:
        assert name in scaling and name in categories                  # annotations; legend entries
    assert BENCH in categories and "c$\\alpha$" in categories            # panel title, category tick label


def test_rows_with_fitted_prompts_are_marked(tmp_path):
    runs = tmp_path / "runs"
    fitted = write_result(make_run(runs, "pretrain", "short") / "eval", "short-context", 0.3)
    plain = write_result(make_run(runs, "pretrain", "long") / "eval", "long-context", 0.4)
    d = json.loads(fitted.read_text())
    d["context"] = {"max_len": 1024, "prompts": 1346, "shots_reduced": 678, "left_truncated": 12}
    fitted.write_text(json.dumps(d))
    d = json.loads(plain.read_text())
    d["context"] = {"max_len": 4096, "prompts": 1346, "shots_reduced": 0, "left_truncated": 0}
    plain.write_text(json.dumps(d))
    assert main([f"runs_root={runs}", "print_table=false", "plots=false", "strict=1"]) == 0
    board = json.loads((runs / "leaderboard" / "leaderboard.json").read_text())
    rows = {r["model"]: r for t in board["tables"] for r in t["rows"]}
    assert rows["short-context"]["scores"]["ceval"]["context"] == {"max_len": 1024, "shots_reduced": 678,
                                                                    "left_truncated": 12}
    assert rows["long-context"]["scores"]["ceval"]["context"] is None
    md = (runs / "leaderboard" / "leaderboard.md").read_text(encoding="utf-8")
    short = next(l for l in md.splitlines() if "short-context" in l)
    long_ = next(l for l in md.splitlines() if "long-context" in l)
    assert "⚠ctx 678+12" in short and "⚠ctx" not in long_
    assert "OpenCompass" in md and "lm-eval" in md and "max\\_len 1024)" in md
    page = (runs / "leaderboard" / "index.html").read_text(encoding="utf-8")
    assert "⚠ctx 678+12" in page and page.count("⚠ctx") == 2            # the cell and the note

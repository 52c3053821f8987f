"""Leaderboard cells and escaping, written out by hand: every Markdown special character, html.escape
with quotes, the number formats at their unit boundaries, and one table in both formats (closes
mutmut survivors of leaderboard/render.py; the equivalent ones are in tests/mutation_equivalent.md)."""
import pytest

from leaderboard import render
from leaderboard.collect import bench_label


def test_md_escape_every_special_character():
    assert render.md_escape("a|b*c_d`e\\f$g<h>[x](y)\r\nz") == "a\\|b\\*c\\_d\\`e\\\\f\\$g&lt;h>[x]\\(y)  z"
    assert render.md_escape(12) == "12"


def test_html_escape_slug():
    assert render._e('<a href="x">\'&') == "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;"
    assert render._slug("C-Eval / 5shot_v2 (x)") == "C-Eval-5shot_v2-x" and render._slug("中文") == "x"


@pytest.mark.parametrize("n,text", [(None, "—"), (0, "0"), (7.9, "7"), (999, "999"), (1000, "1K"), (1234, "1.23K"),
                                    (99_949, "99.9K"), (100_000, "100K"), (999_999, "1,000K"), (12_345_678, "12.3M"),
                                    (123_456_789, "123M"), (1.5e9, "1.5B"), (1e12, "1T"), (2.5e14, "250T")])
def test_fmt_count(n, text):
    assert render.fmt_count(n) == text


def test_fmt_score_and_protocol_label():
    assert render.fmt_score(None) == "—" and render.fmt_score({}) == "—"
    assert render.fmt_score({"acc": 45.678}) == "45.68"
    s = {"acc": 45.678, "ci95": [40.11, 50.26], "mismatch": True, "context": {"shots_reduced": 3, "left_truncated": 1}}
    assert render.fmt_score(s) == "45.68 [40.1, 50.3] ≠data ⚠ctx 3+1"
    assert render.proto_label({"protocol": "base-5shot-logits", "protocol_version": 2, "subset": "val"}) == \
        "base-5shot-logits v2 · val"
    assert render.proto_label({"protocol": "published", "protocol_version": None}) == "published"


def row(rank, model, acc, status="clean"):
    return {"rank": rank, "model": model, "params": 1.2e9, "tokens": None, "kind": "ours",
            "scores": {"ceval": {"acc": acc, "ci95": [acc - 1, acc + 1]} if acc is not None else None},
            "protocol": "base-5shot-logits", "protocol_version": 1, "subset": "val",
            "contamination": {"label": "checked", "status": status}, "lineage": "sft<-pt",
            "source": ["a.json", "b|c"], "notes": "n*1" if rank == 1 else ""}


TABLE = {"ranked": True, "benchmarks": ["ceval"], "id": "ours base/5shot", "title": "T",
         "rows": [row(1, "m<1>", 41.5, "suspect/x"), row(None, "m|2", None)]}


def test_table_in_markdown_and_html():
    label = bench_label("ceval")
    assert render._md_table(TABLE) == [
        f"| # | model | params | tokens | {label} (95% CI) | protocol | contamination | lineage | source |",
        "|---:|---|---:|---:|---:|---|---|---|---|",
        "| 1 | m&lt;1> | 1.2B | — | 41.50 [40.5, 42.5] | base-5shot-logits v1 · val | checked | sft&lt;-pt | a.json; b\\|c — n\\*1 |",
        "|  | m\\|2 | 1.2B | — | — | base-5shot-logits v1 · val | checked | sft&lt;-pt | a.json; b\\|c |"]
    unranked = dict(TABLE, ranked=False)
    assert render._md_table(unranked)[0] == f"| model | params | tokens | {label} | protocol | contamination | lineage | source |"
    head = "".join(f'<th data-type="{t}" scope="col">{h}</th>' for h, t in (
        ("#", "num"), ("model", "text"), ("params", "num"), ("tokens", "num"), (f"{label} (95% CI)", "num"),
        ("protocol", "text"), ("contamination", "text"), ("lineage", "text"), ("source", "text")))
    cells1 = ('<td class="num" data-sort="1">1</td><td>m&lt;1&gt;</td><td class="num" data-sort="1200000000.0">1.2B</td>'
              '<td class="num" data-sort="">—</td><td class="num" data-sort="41.5">41.50 [40.5, 42.5]</td>'
              '<td>base-5shot-logits v1 · val</td><td><span class="flag-suspectx">checked</span></td>'
              '<td>sft&lt;-pt</td><td>a.json; b|c — n*1</td>')
    cells2 = ('<td class="num" data-sort=""></td><td>m|2</td><td class="num" data-sort="1200000000.0">1.2B</td>'
              '<td class="num" data-sort="">—</td><td class="num" data-sort="">—</td>'
              '<td>base-5shot-logits v1 · val</td><td><span class="flag-clean">checked</span></td>'
              '<td>sft&lt;-pt</td><td>a.json; b|c</td>')
    assert render._html_table(TABLE) == (
        f'<table class="sortable" id="t-ours-base-5shot"><thead><tr>{head}</tr></thead><tbody>\n'
        f'<tr class="ours">{cells1}</tr>\n<tr class="ours">{cells2}</tr>\n</tbody></table>')


@pytest.mark.parametrize("n,text", [(1e6, "1M"), (1e9, "1B"), (999_999_999, "1,000M")])
def test_fmt_count_exact_unit_boundaries(n, text):
    # exactly one unit is read in that unit (1M, not 1,000K), just below it stays in the smaller one
    assert render.fmt_count(n) == text


def test_slug_keeps_letters_at_the_ends():
    # only the separators runs become "-" and only "-" is stripped from the ends
    assert render._slug("Xa b-X") == "Xa-b-X" and render._slug("--x1--") == "x1"


def test_tied_rank_and_token_cells():
    r = dict(row(2, "m", 50.0), tied=True, tokens=3.0e10)
    untied = dict(row(3, "n", 40.0), tied=False)
    table = {"ranked": True, "benchmarks": ["ceval"], "id": "t", "title": "T", "rows": [r, untied]}
    md = render._md_table(table)
    assert md[2].startswith("| 2 (tied) | m | 1.2B | 30B | ") and md[3].startswith("| 3 | n | 1.2B | — | ")
    html = render._html_table(table)
    assert '<td class="num" data-sort="2">2 (tied)</td>' in html
    assert '<td class="num" data-sort="30000000000.0">30B</td>' in html

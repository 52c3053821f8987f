"""Markdown and static HTML for the leaderboard tables.

Every piece of text that came from a file (model names, paths, notes) is escaped: html.escape in
the page, and `|`, `<`, backslash, `$` (math in GitHub's Markdown) and emphasis characters in the
Markdown. Names are text, never markup or formulas (the plots draw them with mathtext off).
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from leaderboard.collect import bench_label

TEMPLATE = Path(__file__).with_name("template.html")


# ---- formatting -------------------------------------------------------------------------------
TIE_NOTE = ("A row that cannot be told apart from the one above (paired McNemar p >= 0.05 on the same "
            "questions, or overlapping 95% CIs without per-question results) shares its rank, marked (tied).")


def fmt_count(n) -> str:
    """1.12B / 3.0M / 52K; '—' for unknown."""
    if n is None:
        return "—"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 100 else f"{v:,.0f}{unit}"
    return str(int(n))


def fmt_score(s: dict | None) -> str:
    if not s:
        return "—"
    out = f"{s['acc']:.2f}"
    if s.get("ci95"):
        out += f" [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}]"
    if s.get("mismatch"):
        out += " ≠data"
    if s.get("context"):
        out += f" ⚠ctx {s['context']['shots_reduced']}+{s['context']['left_truncated']}"
    return out


def context_note(table: dict) -> list[str]:
    """The note that explains the ⚠ctx mark, for a table where some row carries it."""
    marked = [s["context"] for r in table["rows"] for s in r["scores"].values() if s and s.get("context")]
    if not marked:
        return []
    return ["⚠ctx k+m: some prompts were longer than the model's context (max_len "
            f"{', '.join(sorted({str(c['max_len']) for c in marked}))}) and were fitted before scoring: k lost "
            "in-context examples (OpenCompass's policy), m were cut at the left end (lm-eval's policy). "
            "The result file's `context` field has the counts per subject."]


def proto_label(row: dict) -> str:
    if row.get("protocol_version") is not None:
        return f"{row['protocol']} v{row['protocol_version']} · {row['subset']}"
    return row["protocol"]


def md_escape(text) -> str:
    text = str(text).replace("\r", " ").replace("\n", " ")
    text = re.sub(r"([\\`*_|$])", r"\\\1", text).replace("](", "]\\(")  # no tables split, links or math
    return text.replace("<", "&lt;")  # no raw HTML tag can start; "->" stays readable


def _columns(table: dict) -> list[tuple[str, str, callable, callable]]:
    """(header, type, cell text, sort key) for a table; the same columns in Markdown and HTML."""
    cols = []
    if table["ranked"]:
        cols.append(("#", "num", lambda r: "" if r["rank"] is None else f"{r['rank']}{' (tied)' if r.get('tied') else ''}",
                     lambda r: r["rank"]))
    cols += [("model", "text", lambda r: r["model"], None),
             ("params", "num", lambda r: fmt_count(r["params"]), lambda r: r["params"]),
             ("tokens", "num", lambda r: fmt_count(r["tokens"]), lambda r: r["tokens"])]
    for b in table["benchmarks"]:
        ci = " (95% CI)" if table["ranked"] else ""
        cols.append((bench_label(b) + ci, "num", lambda r, b=b: fmt_score(r["scores"].get(b)),
                     lambda r, b=b: (r["scores"].get(b) or {}).get("acc")))
    cols += [("protocol", "text", proto_label, None),
             ("contamination", "text", lambda r: r["contamination"]["label"], None),
             ("lineage", "text", lambda r: r["lineage"], None),
             ("source", "text", lambda r: "; ".join(r["source"]) + (f" — {r['notes']}" if r["notes"] else ""), None)]
    return cols


# ---- Markdown ---------------------------------------------------------------------------------
def _md_table(table: dict) -> list[str]:
    cols = _columns(table)
    lines = ["| " + " | ".join(md_escape(c[0]) for c in cols) + " |",
             "|" + "|".join("---:" if c[1] == "num" else "---" for c in cols) + "|"]
    for r in table["rows"]:
        lines.append("| " + " | ".join(md_escape(c[2](r)) for c in cols) + " |")
    return lines


def render_markdown(board: dict) -> str:
    out = ["# Leaderboard", "",
           f"Generated {board['generated']} from {board['n_results']} result file(s) under "
           f"`{board['runs_root']}` and {board['n_baselines']} published baseline(s).", ""]
    if board["n_results"] == 0:
        out += [f"> {board['empty_message']}", ""]
    for t in board["tables"]:
        out += [f"## {md_escape(t['title'])}", "",
                f"Ranked by the mean of {', '.join(t['rank_by'])} over rows that have all of them on "
                f"the same data. Our scores are micro accuracy (%) with a 95% CI. {TIE_NOTE}", ""]
        out += _md_table(t) + [""]
        notes = t["notes"] + context_note(t)
        out += [f"- {md_escape(n)}" for n in notes] + ([""] if notes else [])
    out += ["## Published numbers (other or unknown protocols: not ranked against ours)", "",
            "Each table is one source as printed there. Protocols differ between sources and are often "
            "not stated, so these numbers are context, not competitors; the order is by mean score "
            "for reading only.", ""]
    for t in board["published"]:
        out += [f"### {md_escape(t['title'])}", ""] + _md_table(t) + [""]
        out += [f"- {md_escape(n)}" for n in t["notes"]] + [""]
    if board["plots"]:
        out += ["## Plots", ""] + [f"![{md_escape(p['title'])}]({p['png']})" for p in board["plots"]] + [""]
    if board["warnings"]:
        out += ["## Skipped inputs and warnings", ""] + [f"- {md_escape(w)}" for w in board["warnings"]] + [""]
    return "\n".join(out)


# ---- HTML -------------------------------------------------------------------------------------
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-") or "x"


def _html_table(table: dict) -> str:
    cols = _columns(table)
    head = "".join(f'<th data-type="{c[1]}" scope="col">{_e(c[0])}</th>' for c in cols)
    body = []
    for r in table["rows"]:
        cells = []
        for header, typ, text, key in cols:
            k = key(r) if key else None
            attrs = f' class="num" data-sort="{_e("" if k is None else k)}"' if typ == "num" else ""
            val = _e(text(r))
            if header == "contamination":
                val = f'<span class="flag-{_e(r["contamination"]["status"].replace("/", ""))}">{val}</span>'
            cells.append(f"<td{attrs}>{val}</td>")
        body.append(f'<tr class="{_e(r["kind"])}">{"".join(cells)}</tr>')
    return (f'<table class="sortable" id="t-{_e(_slug(table["id"]))}"><thead><tr>{head}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table>')


def render_html(board: dict) -> str:
    parts = []
    if board["n_results"] == 0:
        parts.append(f'<p class="warn">{_e(board["empty_message"])}</p>')
    for t in board["tables"]:
        parts.append(f'<section class="board" data-protocol="{_e(t["protocol"])}">'
                     f'<h2>{_e(t["title"])}</h2><p class="note">Ranked by the mean of {_e(", ".join(t["rank_by"]))}'
                     f'; our scores are micro accuracy (%) with a 95% CI. {_e(TIE_NOTE)}</p>{_html_table(t)}'
                     + "".join(f'<p class="note">{_e(n)}</p>' for n in t["notes"] + context_note(t)) + "</section>")
    if board["published"]:
        parts.append('<h2>Published numbers (other or unknown protocols: not ranked against ours)</h2>'
                     '<p class="note">Each table is one source as printed there; protocols differ between '
                     'sources and are often not stated.</p>')
    for t in board["published"]:
        parts.append(f'<section class="board" data-protocol="published"><h3>{_e(t["title"])}</h3>'
                     f'{_html_table(t)}' + "".join(f'<p class="note">{_e(n)}</p>' for n in t["notes"]) + "</section>")
    if board["plots"]:
        parts.append("<h2>Plots</h2>" + "".join(
            f'<figure><img src="{_e(p["svg"])}" alt="{_e(p["title"])}"><figcaption>{_e(p["title"])}</figcaption></figure>'
            for p in board["plots"]))
    if board["warnings"]:
        parts.append('<h2>Skipped inputs and warnings</h2><ul class="warn">'
                     + "".join(f"<li>{_e(w)}</li>" for w in board["warnings"]) + "</ul>")
    protocols = sorted({t["protocol"] for t in board["tables"]}) + (["published"] if board["published"] else [])
    options = "\n".join(f'    <option value="{_e(p)}">{_e(p)}</option>' for p in protocols)
    meta = (f"Generated {board['generated']} from {board['n_results']} result file(s) and "
            f"{board['n_baselines']} published baseline(s).")
    page = TEMPLATE.read_text(encoding="utf-8")
    # Replace the placeholders in one pass so that text containing a placeholder is not expanded.
    subs = {"<!--META-->": _e(meta), "<!--FILTER_OPTIONS-->": options, "<!--BODY-->": "\n".join(parts)}
    return re.sub("|".join(map(re.escape, subs)), lambda m: subs[m.group(0)], page)

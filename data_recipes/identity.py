"""Self-identity SFT conversations ("你是谁？" -> "我是{name}，由{author}…") from our own templates.

The templates live in `data_recipes/identity_templates.yaml` (zh and en groups of prompts and
answers). A data recipe names the model and its maker:

    identity: {name: 小钢, author: zhllm-kit}
    sources:
      - {name: identity, format: identity, weight: 2.0}

`fill` also understands LLaMA-Factory's `{{name}}`/`{{author}}` placeholders, so its identity.json can
be an extra alpaca source with `fill_identity: true`.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import yaml

from core.errors import UserError

TEMPLATES = Path(__file__).with_name("identity_templates.yaml")
PLACEHOLDERS = ("name", "author")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}|\{(\w+)\}")


class IdentityError(UserError, ValueError):
    """Bad identity templates or an unset name/author."""
    kind = "data"


def fill(text: str, name: str, author: str, where: str = "") -> str:
    """Replace {name}/{author} (and {{name}}/{{author}}); any other placeholder is an error."""
    if not name or not author:
        raise IdentityError("identity.name and identity.author must both be set in the data recipe "
                            f"(got name={name!r}, author={author!r})")
    values = {"name": name, "author": author}

    def sub(m: re.Match) -> str:
        key = m.group(1) or m.group(2)
        if key not in values:
            raise IdentityError(f"{where or 'identity text'}: unknown placeholder {m.group(0)!r} "
                                f"(known: {', '.join('{' + k + '}' for k in PLACEHOLDERS)})")
        return values[key]
    return _PLACEHOLDER_RE.sub(sub, text)


def load_templates(path: str | Path = TEMPLATES) -> dict[str, list[dict]]:
    """{lang: [{"prompts": [...], "answers": [...], "line": int}]}, checked for shape."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.compose(text)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise IdentityError(f"{path}: cannot read identity templates: {e}") from None
    if not isinstance(data, dict) or not data:
        raise IdentityError(f"{path}: expected a mapping of language -> list of groups")
    lines = {k.value: v for k, v in doc.value} if doc is not None else {}
    out: dict[str, list[dict]] = {}
    for lang, groups in data.items():
        if not isinstance(groups, list) or not groups:
            raise IdentityError(f"{path}: '{lang}' must be a non-empty list of groups")
        node_groups = lines[lang].value
        out[lang] = []
        for i, g in enumerate(groups):
            line = node_groups[i].start_mark.line + 1
            if not isinstance(g, dict) or not g.get("prompts") or not g.get("answers"):
                raise IdentityError(f"{path}:{line}: group {lang}[{i}] needs non-empty 'prompts' and 'answers'")
            for a in g["answers"]:
                if "{name}" not in a:
                    raise IdentityError(f"{path}:{line}: answer without {{name}}: {a!r}")
            out[lang].append({"prompts": [str(p) for p in g["prompts"]],
                              "answers": [str(a) for a in g["answers"]], "line": line})
    return out


def identity_conversations(name: str, author: str, langs: list[str] | tuple[str, ...] = ("zh", "en"),
                           seed: int = 0, path: str | Path = TEMPLATES) -> list[tuple[str, list[dict]]]:
    """[(where, messages)]: every template prompt once, with an answer drawn (seeded) from its group."""
    templates = load_templates(path)
    rng = random.Random(f"identity:{seed}")
    out = []
    for lang in langs:
        if lang not in templates:
            raise IdentityError(f"identity language {lang!r} not in {path} (has: {', '.join(templates)})")
        for group in templates[lang]:
            where = f"{Path(path).name}:{group['line']}"
            for prompt in group["prompts"]:
                answer = fill(rng.choice(group["answers"]), name, author, where)
                out.append((where, [{"role": "user", "content": fill(prompt, name, author, where)},
                                    {"role": "assistant", "content": answer}]))
    return out

"""Self-identity templating: our zh+en templates filled with the recipe's name and author."""
import re

import pytest

from data_recipes import identity


def test_every_template_prompt_filled_in_both_languages():
    convs = identity.identity_conversations("知微", "测试组", seed=3)
    tpl = identity.load_templates()
    assert len(convs) == sum(len(g["prompts"]) for lang in ("zh", "en") for g in tpl[lang])
    prompts = [c[1][0]["content"] for c in convs]
    assert "你是谁？" in prompts and "Who are you?" in prompts
    for where, msgs in convs:
        assert re.match(r"identity_templates\.yaml:\d+$", where)
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        answer = msgs[1]["content"]
        assert "知微" in answer and "{" not in answer and "}" not in answer
    assert sum("测试组" in m[1]["content"] for _, m in convs) >= len(convs) * 0.9
    assert convs == identity.identity_conversations("知微", "测试组", seed=3)
    only_zh = identity.identity_conversations("知微", "测试组", langs=["zh"])
    assert all(re.search(r"[\u4e00-\u9fff]", m[0]["content"]) for _, m in only_zh)


def test_fill_both_placeholder_styles_and_errors():
    assert identity.fill("我是{{name}}，由{{ author }}开发；{name}", "A", "B") == "我是A，由B开发；A"
    with pytest.raises(identity.IdentityError, match="unknown placeholder"):
        identity.fill("我是{model}", "A", "B", "x.json:3")
    with pytest.raises(identity.IdentityError, match="identity.name"):
        identity.fill("我是{name}", "", "B")


def test_bad_template_file_names_the_line(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("zh:\n  - prompts: [你是谁]\n    answers: ['我是{name}']\n  - prompts: [你好]\n    answers: [你好]\n",
                 encoding="utf-8")
    with pytest.raises(identity.IdentityError, match=r"t.yaml:4: answer without \{name\}"):
        identity.load_templates(p)

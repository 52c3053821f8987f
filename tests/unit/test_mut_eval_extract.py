"""Answer extraction cases that pin each rule's place in the order (closes mutmut survivors of
eval/extract.py; the equivalent ones are in tests/mutation_equivalent.md)."""
import pytest

from eval.extract import extract_choice


@pytest.mark.parametrize("text,choices,want", [
    # rule 2 (the whole reply is a letter) comes before rule 4 (an option's text is quoted)
    ("“A”", ["B", "A", "C", "D"], "A"),
    # rule 3 (leading letter + delimiter) comes before rule 5, which would see two letters here
    ("B. 广州（不是 C）", None, "B"),
    # a letter followed by a lower-case word is an article only when it is "A"
    ("B because the others are wrong", None, "B"),
    # the article needs a lower-case word right after the space: "A 3x" is the answer A
    ("A 3x faster", None, "A"),
    # an article "A" after other text is still skipped; the one remaining letter is read (rule 5)
    ("我想 A cat 不对，应是 C", None, "C"),
    ("我觉得是 C 吧", None, "C"),
    # only the first four options have letters; a fifth option's text is ignored
    ("甲乙丙", ["x", "y", "z", "w", "甲乙丙"], None),
])
def test_rule_order(text, choices, want):
    assert extract_choice(text, choices) == want

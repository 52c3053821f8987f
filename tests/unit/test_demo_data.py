from data_recipes.demo_data import render_all


def test_committed_demo_files_match_the_generator():
    """The shipped demo corpus/benchmark are exactly what data_recipes/demo_data.py generates."""
    stale = [str(p) for p, text in render_all().items()
             if not p.is_file() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"regenerate with `python -m data_recipes.demo_data`: {stale}"

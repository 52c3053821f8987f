"""index.html in a real browser: headless Chromium (Debian packages chromium + chromium-driver, driven
by selenium) loads the page from disk; the table renders, clicking a column header reorders the
rows, the protocol filter hides other tables, a hostile model name stays text, and the console shows
no errors. Skips with a message when chromium, chromedriver or selenium is missing
(`apt-get install -y chromium chromium-driver`; .ci/run installs them)."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from leaderboard.build import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
EVIL = '<img src=x onerror="window.pwned=1">'


def _result(folder: Path, model: str, acc: float, proto: str = "base-5shot-logits") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "manifest.json").write_text(json.dumps(
        {"stage": "sft", "run": folder.parent.name, "parent": None, "started": "2026-03-01T00:00:00Z",
         "finished": "2026-03-01T00:10:00Z", "steps": 3, "tokens_seen": 100, "env": {"device": "cpu"}}))
    (folder / f"ceval.{proto}.json").write_text(json.dumps({
        "schema_version": 1, "benchmark": "ceval", "benchmark_version": "1", "split": "val", "data_source": "local:x",
        "subset": "full", "n_subjects": 4, "n_questions": 100, "n_unparsed": 0,
        "protocol": {"name": proto, "version": 1, "shots": 5, "prompt_format": "p", "scoring": "logits",
                     "averaging": "micro+macro"},
        "model": {"name": model, "path": "p", "run": None, "manifest_sha256": None, "params": 3_000_000},
        "backend": "hf", "acc_micro": acc, "acc_macro": acc,
        "ci95": {"micro": [acc - 0.05, acc + 0.05], "macro": [acc - 0.05, acc + 0.05]},
        "per_subject": {}, "per_category": {"STEM": {"acc": acc, "n": 50}, "Humanities": {"acc": acc, "n": 50}},
        "git_sha": None, "date": "2026-03-01T00:20:00Z", "predictions": "x"}))


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("browser") / "runs"
    for i, (name, acc) in enumerate((("alpha", 0.31), ("beta", 0.52), (EVIL, 0.44), ("gamma", 0.27))):
        _result(runs / "sft" / f"r{i}" / "eval", name, acc)
    _result(runs / "sft" / "r9" / "eval", "chatty", 0.35, proto="chat-0shot-gen")
    assert main([f"runs_root={runs}", "print_table=false"]) == 0
    return runs / "leaderboard" / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _models(table) -> list[str]:
    return [row.find_elements("tag name", "td")[1].text for row in table.find_elements("css selector", "tbody tr")]


def test_index_html_renders_sorts_filters_and_logs_no_errors(board, browser):
    from selenium.webdriver.common.by import By
    browser.get(board.as_uri())
    tables = browser.find_elements(By.CSS_SELECTOR, "section.board table.sortable")
    assert len(tables) >= 3  # two protocols of ours + published sources
    main_table = tables[0]
    assert _models(main_table) == ["beta", EVIL, "alpha", "gamma"]  # ranked by C-Eval, the name shown as text
    assert browser.execute_script("return window.pwned === undefined && document.images.length === 3")
    header = next(th for th in main_table.find_elements(By.CSS_SELECTOR, "thead th") if th.text.startswith("C-Eval"))
    header.click()
    assert _models(main_table) == ["gamma", "alpha", EVIL, "beta"]  # ascending
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _models(main_table) == ["beta", EVIL, "alpha", "gamma"]
    model_th = next(th for th in main_table.find_elements(By.CSS_SELECTOR, "thead th") if th.text == "model")
    model_th.click()
    assert _models(main_table) == sorted(_models(main_table), key=str.lower)
    # The filter shows one protocol's table only.
    browser.find_element(By.CSS_SELECTOR, "#protocol-filter option[value='chat-0shot-gen']").click()
    visible = [s for s in browser.find_elements(By.CSS_SELECTOR, "section.board") if s.is_displayed()]
    assert [s.get_attribute("data-protocol") for s in visible] == ["chat-0shot-gen"]
    # Every plot loaded from its relative path.
    assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

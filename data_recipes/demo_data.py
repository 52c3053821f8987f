"""The built-in demo data, written by this project: a small Chinese pretraining corpus, an SFT mix,
preference pairs and a multiple-choice benchmark in C-Eval's CSV layout, all generated from the
same small fact tables so that the demo model can actually learn something the benchmark asks.

The generated files are committed under data_recipes/demo/ and eval/benchmarks/demo_bench/;
a test regenerates them and checks they are byte-identical.

Run as:
    python -m data_recipes.demo_data            # rewrite the committed demo files
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from core.errors import entrypoint

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data_recipes" / "demo"
BENCH_DIR = ROOT / "eval" / "benchmarks" / "demo_bench"

CAPITALS = [("广东", "广州"), ("四川", "成都"), ("湖北", "武汉"), ("湖南", "长沙"), ("浙江", "杭州"),
            ("江苏", "南京"), ("山东", "济南"), ("河南", "郑州"), ("河北", "石家庄"), ("山西", "太原"),
            ("陕西", "西安"), ("甘肃", "兰州"), ("福建", "福州"), ("江西", "南昌"), ("安徽", "合肥"),
            ("云南", "昆明"), ("贵州", "贵阳"), ("辽宁", "沈阳"), ("吉林", "长春"), ("黑龙江", "哈尔滨"),
            ("海南", "海口"), ("青海", "西宁"), ("台湾", "台北"), ("广西", "南宁")]
ANTONYMS = [("大", "小"), ("高", "矮"), ("长", "短"), ("快", "慢"), ("多", "少"), ("冷", "热"),
            ("新", "旧"), ("远", "近"), ("轻", "重"), ("早", "晚"), ("黑", "白"), ("上", "下"),
            ("前", "后"), ("左", "右"), ("开", "关"), ("进", "出"), ("买", "卖"), ("哭", "笑"),
            ("胖", "瘦"), ("深", "浅")]
COLORS = [("天空", "蓝色"), ("草地", "绿色"), ("雪", "白色"), ("煤炭", "黑色"), ("橘子", "橙色"),
          ("香蕉", "黄色"), ("血液", "红色"), ("茄子", "紫色"), ("乌鸦", "黑色"), ("云朵", "白色")]
ANIMALS = [("狗", "汪汪"), ("猫", "喵喵"), ("牛", "哞哞"), ("羊", "咩咩"), ("鸭子", "嘎嘎"),
           ("公鸡", "喔喔"), ("青蛙", "呱呱"), ("小鸟", "叽叽喳喳")]
NUMBER_FACTS = [("一周", "七天"), ("一年", "十二个月"), ("一天", "二十四小时"), ("一小时", "六十分钟"),
                ("一分钟", "六十秒"), ("一打", "十二个"), ("一个世纪", "一百年"), ("一公里", "一千米")]
NAMES = ["小明", "小红", "小华", "小刚", "小丽", "老王", "李老师", "张阿姨", "王爷爷", "小芳"]
PLACES = ["学校", "公园", "图书馆", "市场", "河边", "山上", "家里", "车站", "医院", "田里"]
ACTIONS = ["看书", "跑步", "买菜", "钓鱼", "画画", "唱歌", "写字", "种树", "散步", "做饭"]
TIMES = ["早上", "中午", "下午", "晚上", "周末", "春天", "夏天", "秋天", "冬天", "昨天"]
FEELINGS = ["很开心", "有点累", "非常高兴", "觉得很有意思", "学到了很多", "心情很好"]
DIGITS = "零一二三四五六七八九"


def zh_number(n: int) -> str:
    """0..99 in Chinese numerals."""
    if n < 10:
        return DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else DIGITS[tens]) + "十" + ("" if ones == 0 else DIGITS[ones])


# ---- pretraining corpus ------------------------------------------------------------------------
def _fact_docs(rng: random.Random) -> list[str]:
    docs = []
    for prov, cap in CAPITALS:
        s = [f"{prov}省的省会是{cap}。", f"{cap}是{prov}省的省会城市。", f"说到{prov}，人们会想到它的省会{cap}。",
             f"{cap}位于{prov}，是{prov}省的政治和文化中心。"]
        rng.shuffle(s)
        docs.append("".join(s))
    for a, b in ANTONYMS:
        docs.append(f"“{a}”的反义词是“{b}”。“{b}”的反义词是“{a}”。{a}和{b}意思相反。")
    for thing, color in COLORS:
        docs.append(f"{thing}是{color}的。大家都知道{thing}的颜色是{color}。")
    for animal, sound in ANIMALS:
        docs.append(f"{animal}的叫声是“{sound}”。{animal}会{sound}地叫。")
    for unit, amount in NUMBER_FACTS:
        docs.append(f"{unit}有{amount}。我们常说{unit}等于{amount}。")
    return docs


def _arithmetic_docs(rng: random.Random, n_docs: int) -> list[str]:
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(rng.randint(6, 12)):
            a, b = rng.randint(0, 49), rng.randint(0, 49)
            if rng.random() < 0.5:
                lines.append(f"{a}加{b}等于{a + b}。" if rng.random() < 0.5 else f"{a}+{b}={a + b}")
            else:
                a, b = max(a, b), min(a, b)
                lines.append(f"{zh_number(a)}减{zh_number(b)}等于{zh_number(a - b)}。" if a < 100 and rng.random() < 0.3
                             else f"{a}减{b}等于{a - b}。")
        docs.append("\n".join(lines))
    return docs


def _story_docs(rng: random.Random, n_docs: int) -> list[str]:
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(4, 9)):
            name, place, act, t, feel = (rng.choice(NAMES), rng.choice(PLACES), rng.choice(ACTIONS),
                                         rng.choice(TIMES), rng.choice(FEELINGS))
            form = rng.randrange(4)
            if form == 0:
                sents.append(f"{t}，{name}去{place}{act}，{feel}。")
            elif form == 1:
                prov, cap = rng.choice(CAPITALS)
                sents.append(f"{name}{t}坐车去了{prov}的{cap}，在那里{act}。")
            elif form == 2:
                thing, color = rng.choice(COLORS)
                sents.append(f"{name}在{place}看见了{thing}，{thing}是{color}的。")
            else:
                a, b = rng.randint(1, 20), rng.randint(1, 20)
                sents.append(f"{name}有{a}个苹果，又买了{b}个，一共有{a + b}个苹果。")
        docs.append("".join(sents))
    return docs


def _junk_docs(rng: random.Random, good: list[str]) -> list[str]:
    """Records the cleaning chain should reject or dedupe (so the demo shows it working)."""
    junk = ["短。", "@@@ ### $$$ %%% ^^^ &&& *** !!! ??? ~~~ +++ === ||| <<< >>> ... ,,, ;;;",
            "this document is english only and has no chinese characters at all, so the cjk ratio filter drops it.",
            "\n".join(["点击这里领取优惠券！"] * 12), "广告 " * 60,
            "這是一段繁體中文的文字，用來測試繁簡轉換。臺灣的省會是臺北。"]
    junk += [rng.choice(good) for _ in range(8)]                                  # exact duplicates
    for doc in rng.sample(good, 8):                                               # near duplicates
        junk.append(doc[:-1] + "！" if len(doc) > 40 else doc + "啊")
    return junk


def pretrain_corpus(seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    facts = _fact_docs(rng)
    stories = _story_docs(rng, 900)
    arith = _arithmetic_docs(rng, 700)
    web = stories[:150] + facts[:20]
    return {"facts.jsonl": facts * 6, "stories.jsonl": stories, "arithmetic.jsonl": arith,
            "web_scrape.jsonl": web + _junk_docs(rng, web)}


# ---- SFT, DPO and benchmark ---------------------------------------------------------------------
def _qa_pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, answer, wrong answer) triples covering every fact table and arithmetic."""
    qa = []
    for prov, cap in CAPITALS:
        wrong = rng.choice([c for _, c in CAPITALS if c != cap])
        qa.append((f"{prov}省的省会是哪里？", f"{prov}省的省会是{cap}。", f"{prov}省的省会是{wrong}。"))
    for a, b in ANTONYMS:
        qa.append((f"“{a}”的反义词是什么？", f"“{a}”的反义词是“{b}”。", f"“{a}”的反义词是“{a}”。"))
    for thing, color in COLORS:
        wrong = rng.choice([c for _, c in COLORS if c != color])
        qa.append((f"{thing}是什么颜色的？", f"{thing}是{color}的。", f"{thing}是{wrong}的。"))
    for unit, amount in NUMBER_FACTS:
        qa.append((f"{unit}有多少？", f"{unit}有{amount}。", f"{unit}有三个。"))
    for _ in range(60):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        qa.append((f"{a}加{b}等于多少？", f"{a}加{b}等于{a + b}。", f"{a}加{b}等于{a + b + rng.choice([-2, -1, 1, 3])}。"))
    return qa


def _mcq(rng: random.Random, question: str, answer: str, distractors: list[str]) -> dict:
    options = [answer] + rng.sample(sorted(set(distractors) - {answer}), 3)
    rng.shuffle(options)
    return {"question": question, "A": options[0], "B": options[1], "C": options[2], "D": options[3],
            "answer": "ABCD"[options.index(answer)]}


def benchmark(seed: int = 1) -> dict[str, list[dict]]:
    """Subjects of the built-in benchmark (each: a list of MCQ rows; the first 5 are `dev`)."""
    rng = random.Random(seed)
    caps = [c for _, c in CAPITALS]
    geo = [_mcq(rng, f"{p}省的省会是____。", c, caps) for p, c in CAPITALS]
    ants = [b for _, b in ANTONYMS]
    words = [_mcq(rng, f"“{a}”的反义词是____。", b, ants) for a, b in ANTONYMS]
    cols = sorted({c for _, c in COLORS})
    sense = [_mcq(rng, f"{t}通常是什么颜色？", c, cols) for t, c in COLORS]
    sense += [_mcq(rng, f"{u}有____。", n, [m for _, m in NUMBER_FACTS]) for u, n in NUMBER_FACTS]
    math = []
    for _ in range(30):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        s = a + b
        math.append(_mcq(rng, f"{a}加{b}等于____。", str(s), [str(s + d) for d in (-10, -2, -1, 1, 2, 10) if s + d >= 0]))
    return {"geography": geo, "chinese_words": words, "common_sense": sense, "arithmetic": math}


BENCH_SUBJECTS = {  # subject -> [English name, Chinese name, category] (C-Eval's subject_mapping.json shape)
    "geography": ["Geography", "地理", "Social Science"],
    "chinese_words": ["Chinese Words", "汉语词汇", "Humanities"],
    "common_sense": ["Common Sense", "常识", "Other"],
    "arithmetic": ["Arithmetic", "算术", "STEM"],
}


def sft_rows(seed: int = 2) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    qa = _qa_pairs(rng)
    chat = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a, _ in qa]
    # An "exam" source the way scraped SFT data often looks: MCQs, two of them copied from the benchmark.
    bench = benchmark()
    exam = []
    for subject in ("geography", "arithmetic"):
        row = bench[subject][7]
        exam.append({"instruction": f"{row['question']}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}",
                     "input": "", "output": f"答案：{row['answer']}"})
    for _ in range(20):
        a, b = rng.randint(50, 99), rng.randint(50, 99)
        opts = [a + b, a + b + 1, a + b - 1, a + b + 10]
        rng.shuffle(opts)
        exam.append({"instruction": f"{a}加{b}等于多少？\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}\nD. {opts[3]}",
                     "input": "", "output": f"答案：{'ABCD'[opts.index(a + b)]}"})
    return {"chat.jsonl": chat, "exam_alpaca.jsonl": exam}


def dpo_rows(seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": q, "chosen": a, "rejected": w} for q, a, w in _qa_pairs(rng)]


# ---- writing -----------------------------------------------------------------------------------
def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv(rows: list[dict], with_expl: bool) -> str:
    buf = io.StringIO()
    cols = ["id", "question", "A", "B", "C", "D", "answer"] + (["explanation"] if with_expl else [])
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(rows):
        w.writerow({"id": i, **r, **({"explanation": ""} if with_expl else {})})
    return buf.getvalue()


def render_all() -> dict[Path, str]:
    """Every generated file (path -> text); `main` writes them, a test compares them."""
    files: dict[Path, str] = {}
    for name, docs in pretrain_corpus().items():
        files[DEMO_DIR / "corpus" / name] = _jsonl({"text": d} for d in docs)
    # A byte copy of a file: file-level dedupe must report it.
    files[DEMO_DIR / "corpus" / "facts_copy.jsonl"] = files[DEMO_DIR / "corpus" / "facts.jsonl"]
    for name, rows in sft_rows().items():
        files[DEMO_DIR / "sft" / name] = _jsonl(rows)
    files[DEMO_DIR / "dpo" / "pairs.jsonl"] = _jsonl(dpo_rows())
    for subject, rows in benchmark().items():
        files[BENCH_DIR / "dev" / f"{subject}_dev.csv"] = _csv(rows[:5], with_expl=True)
        files[BENCH_DIR / "val" / f"{subject}_val.csv"] = _csv(rows[5:], with_expl=False)
    files[BENCH_DIR / "subject_mapping.json"] = json.dumps(BENCH_SUBJECTS, ensure_ascii=False, indent=2) + "\n"
    return files


@entrypoint
def main() -> None:
    for path, text in render_all().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(text.encode()):,} bytes)")


if __name__ == "__main__":
    main()

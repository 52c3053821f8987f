"""The built-in demo data, written by this project: a learnable curriculum in which every stage has a
measurable job on items it never trained on.

One world of synthetic entities (people, towns, products, each with two attributes) and written-out
small-number arithmetic, split by entity (never by sentence) into three parts:

    train    pretraining text AND every post-training row (SFT, DPO pairs, GRPO prompts), plus the
             benchmark's few-shot `dev` rows
    bench    pretraining text only; the built-in benchmark's scored `val` questions ask about them
    heldout  pretraining text only; the held-out DPO pairs and GRPO prompts (scored, never trained on)

So the pretrained model has to store the facts, SFT has to teach a format that carries over to
entities it never saw in SFT, DPO's implicit reward has to prefer true facts on unseen pairs, and
GRPO's reward has to rise on unseen prompts. The split is checked by construction in
tests/unit/test_demo_data.py.

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
from dataclasses import dataclass
from pathlib import Path

from core.errors import entrypoint

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data_recipes" / "demo"
BENCH_DIR = ROOT / "eval" / "benchmarks" / "demo_bench"
LETTERS = "ABCD"
DIGITS = "零一二三四五六七八九"

# ---- the world -----------------------------------------------------------------------------------
CAPITALS = [("广东", "广州"), ("四川", "成都"), ("湖北", "武汉"), ("湖南", "长沙"), ("浙江", "杭州"),
            ("江苏", "南京"), ("山东", "济南"), ("河南", "郑州"), ("河北", "石家庄"), ("山西", "太原"),
            ("陕西", "西安"), ("甘肃", "兰州"), ("福建", "福州"), ("江西", "南昌"), ("安徽", "合肥"),
            ("云南", "昆明"), ("贵州", "贵阳"), ("辽宁", "沈阳"), ("吉林", "长春"), ("黑龙江", "哈尔滨")]
SURNAMES = "王李张刘陈杨黄赵周吴徐孙马胡朱郭何罗高林郑梁谢宋唐许韩冯邓曹"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚英华玉兰萍红鹏辉建文斌宇浩凯健俊帆旭宁龙欣悦雪琳晨阳佳婷"
JOBS = ["教师", "医生", "厨师", "工程师", "画家", "司机", "农民", "律师", "记者", "警察", "护士", "歌手"]
TOWN_HEAD = "青白红金银石松柳桃梅竹云清安永兴"
TOWN_TAIL = "山水河湖溪泉桥林田湾岭川"
SPECIALTIES = ["茶叶", "丝绸", "瓷器", "柑橘", "竹笋", "红枣", "核桃", "蜂蜜", "板栗", "莲藕", "香菇", "葡萄"]
BRANDS = ["飞燕", "金鹿", "红星", "蓝天", "海鸥", "春雷", "白云", "青松", "彩虹", "明月", "东风", "长江",
          "黄河", "雪花", "凤凰", "熊猫", "火炬", "星光", "朝阳", "银河"]
ITEMS = ["台灯", "水壶", "书包", "雨伞", "闹钟", "风扇", "手电筒", "收音机"]
MAKERS = ["东方电器厂", "华光五金厂", "新华制造厂", "前进工具厂", "胜利日用品厂", "光明器材厂", "红旗机械厂",
          "和平工艺厂", "建设电子厂", "友谊用品厂"]
COLOURS = ["红色", "黄色", "绿色", "蓝色", "紫色", "白色", "黑色", "灰色"]


@dataclass(frozen=True)
class Fact:
    """One attribute of one entity, with every way the corpus says it and the benchmark asks it."""
    kind: str            # people | towns | products | arithmetic
    entity: str
    value: str
    options: tuple       # the attribute's value set (distractors come from here)
    statements: tuple    # paraphrases for pretraining text ({e} entity, {v} value)
    question: str        # the benchmark / MCQ question ("{e}的家乡是____。")
    chat_q: str          # a free-form question
    chat_a: str          # its full-sentence answer
    decl: str            # the fact as one declarative sentence ("{e}的家乡是{v}。"), restated in the pretraining quiz answers

    def say(self, i: int) -> str:
        return self.statements[i % len(self.statements)].format(e=self.entity, v=self.value)


PEOPLE_HOME = (("{e}的家乡是{v}。", "{e}来自{v}。", "{e}出生在{v}。", "{e}是{v}人。", "{v}是{e}的家乡。"),
               "{e}的家乡是____。", "{e}的家乡是哪里？", "{e}的家乡是{v}。")
PEOPLE_JOB = (("{e}是一名{v}。", "{e}的职业是{v}。", "{e}在当地做{v}。", "{e}的工作是{v}。", "{e}当了多年{v}。"),
              "{e}是一名____。", "{e}是做什么工作的？", "{e}是一名{v}。")
TOWN_PROV = (("{e}位于{v}省。", "{e}是{v}省的一个小镇。", "{v}省有一个{e}。", "{e}属于{v}省。", "{e}在{v}。"),
             "{e}位于____省。", "{e}在哪个省？", "{e}位于{v}省。")
TOWN_SPEC = (("{e}的特产是{v}。", "{e}盛产{v}。", "{v}是{e}的特产。", "{e}以{v}闻名。", "{e}出产的{v}很有名。"),
             "{e}的特产是____。", "{e}有什么特产？", "{e}的特产是{v}。")
PROD_MAKER = (("{e}由{v}生产。", "{e}是{v}的产品。", "{v}生产{e}。", "{e}出自{v}。", "{v}制造了{e}。"),
              "{e}由____生产。", "{e}是谁生产的？", "{e}由{v}生产。")
PROD_COLOUR = (("{e}是{v}的。", "{e}的颜色是{v}。", "{e}通体{v}。", "{e}外壳是{v}的。", "{e}只有{v}一种颜色。"),
               "{e}是____的。", "{e}是什么颜色？", "{e}是{v}的。")


def zh_number(n: int) -> str:
    """0..99 in Chinese numerals."""
    if n < 10:
        return DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else DIGITS[tens]) + "十" + ("" if ones == 0 else DIGITS[ones])


def _fact(kind, entity, value, options, spec) -> Fact:
    statements, question, chat_q, chat_a = spec
    filled = {"e": entity, "v": value}
    return Fact(kind, entity, value, tuple(options), statements, question.format(**filled), chat_q.format(**filled),
                chat_a.format(**filled), chat_a.format(**filled))


def _names(rng: random.Random, n: int, make) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        name = make(rng)
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _arith_fact(a: int, b: int, op: str) -> Fact:
    r = a + b if op == "加" else a - b
    za, zb, zr = zh_number(a), zh_number(b), zh_number(r)
    statements = (f"{za}{op}{zb}等于{zr}。", f"{a}{op}{b}等于{r}。", f"{za}{op}{zb}得{zr}。",
                  f"{a}{'+' if op == '加' else '-'}{b}={r}。", f"{za}{op}{zb}的结果是{r}。")
    return Fact("arithmetic", f"{a}{op}{b}", str(r), tuple(str(i) for i in range(0, 19)), statements,
                f"{a}{op}{b}等于____。", f"{za}{op}{zb}等于多少？", f"{za}{op}{zb}等于{zr}。答案：{r}",
                f"{a}{op}{b}等于{r}。")


@dataclass
class World:
    """Every fact, grouped by entity, with each entity's part of the split."""
    facts: dict            # entity -> list[Fact]
    part: dict             # entity -> "train" | "bench" | "heldout"

    def of(self, part: str, kind: str | None = None) -> list[Fact]:
        return [f for e, fs in self.facts.items() if self.part[e] == part for f in fs
                if kind is None or f.kind == kind]


SIZES = {"people": 120, "towns": 80, "products": 80}      # entities of each kind
SPLIT = (0.4, 0.4, 0.2)                                      # train, bench, heldout share of each kind


def world(seed: int = 0) -> World:
    rng = random.Random(seed)
    people = _names(rng, SIZES["people"], lambda r: r.choice(SURNAMES) + r.choice(GIVEN) + r.choice(GIVEN))
    towns = _names(rng, SIZES["towns"], lambda r: r.choice(TOWN_HEAD) + r.choice(TOWN_TAIL) + "镇")
    products = _names(rng, SIZES["products"], lambda r: r.choice(BRANDS) + "牌" + r.choice(ITEMS))
    cities, provinces = [c for _, c in CAPITALS], [p for p, _ in CAPITALS]
    facts: dict[str, list[Fact]] = {}
    for p in people:
        facts[p] = [_fact("people", p, rng.choice(cities), cities, PEOPLE_HOME),
                    _fact("people", p, rng.choice(JOBS), JOBS, PEOPLE_JOB)]
    for t in towns:
        facts[t] = [_fact("towns", t, rng.choice(provinces), provinces, TOWN_PROV),
                    _fact("towns", t, rng.choice(SPECIALTIES), SPECIALTIES, TOWN_SPEC)]
    for pr in products:
        facts[pr] = [_fact("products", pr, rng.choice(MAKERS), MAKERS, PROD_MAKER),
                     _fact("products", pr, rng.choice(COLOURS), COLOURS, PROD_COLOUR)]
    sums = [(a, b, "加") for a in range(1, 10) for b in range(1, 10)]
    diffs = [(a + b, b, "减") for a in range(1, 10) for b in range(1, 10)]
    for a, b, op in sums + diffs:
        f = _arith_fact(a, b, op)
        facts[f.entity] = [f]
    part: dict[str, str] = {}
    for kind in ("people", "towns", "products", "arithmetic"):
        ents = [e for e, fs in facts.items() if fs[0].kind == kind]
        rng.shuffle(ents)
        n_train, n_bench = round(SPLIT[0] * len(ents)), round(SPLIT[1] * len(ents))
        for i, e in enumerate(ents):
            part[e] = "train" if i < n_train else "bench" if i < n_train + n_bench else "heldout"
    return World(facts, part)


# ---- multiple-choice rendering -------------------------------------------------------------------
def _distractors(rng: random.Random, f: Fact) -> list[str]:
    if f.kind == "arithmetic":
        r = int(f.value)
        a, b = (int(x) for x in f.entity.replace("减", "加").split("加"))
        near = [str(r + d) for d in (-3, -2, -1, 1, 2, 3, 10) if r + d >= 0 and r + d not in (a, b)]
        return rng.sample(near, 3)
    return rng.sample([o for o in f.options if o != f.value], 3)


def mcq(rng: random.Random, f: Fact) -> dict:
    options = [f.value] + _distractors(rng, f)
    rng.shuffle(options)
    return {"question": f.question, **dict(zip(LETTERS, options)), "answer": LETTERS[options.index(f.value)]}


def options_block(row: dict) -> str:
    return "\n".join(f"{l}. {row[l]}" for l in LETTERS)


def mcq_answer(f: Fact) -> str:
    """The quiz answer in the pretraining text: the question's sentence with its blank filled."""
    return f.decl


def sft_answer(f: Fact) -> str:
    """The reply SFT teaches, to free-form and multiple-choice questions alike: the value alone
    ("哈尔滨。"), one option's text, which eval.extract maps to its letter. Restating the whole sentence
    (`mcq_answer`) makes the model copy the entity's name first, and the demo model mostly cannot copy
    a name it met only in pretraining (it writes a train entity's name instead): on the same base,
    chat-0shot-gen 17.3% with the sentence vs 27.0% with the value (README, "The demo"). Naming the
    letter itself (symbol binding) is beyond a model this size in the demo's budget."""
    return f"{f.value}。"


# ---- pretraining corpus --------------------------------------------------------------------------
BIO_COPIES = 30         # documents that mention each entity (each with its own wording and order)
ARITH_COPIES = 20       # times each arithmetic fact is written out
QUIZ_HEADERS = ["人物知识小测验", "地方常识练习题", "产品知识竞赛题", "算术练习", "课堂小测", "知识问答选择题"]


def _entity_docs(rng: random.Random, w: World) -> list[str]:
    """Each entity in BIO_COPIES short documents; a document tells 2-4 entities' facts in random order."""
    ents = [e for e in w.facts if w.facts[e][0].kind != "arithmetic"]
    slots = [e for e in ents for _ in range(BIO_COPIES)]
    rng.shuffle(slots)
    docs = []
    while slots:
        k = min(rng.randint(2, 4), len(slots))
        group, slots = slots[:k], slots[k:]
        sents = []
        for e in group:
            fs = list(w.facts[e])
            rng.shuffle(fs)
            sents.append("".join(f.say(rng.randrange(len(f.statements))) for f in fs))
        docs.append("".join(sents))
    return docs


def _arithmetic_docs(rng: random.Random, w: World) -> list[str]:
    facts = [f for fs in w.facts.values() for f in fs if f.kind == "arithmetic"]
    slots = [f for f in facts for _ in range(ARITH_COPIES)]
    rng.shuffle(slots)
    docs = []
    while slots:
        k = min(rng.randint(6, 10), len(slots))
        group, slots = slots[:k], slots[k:]
        docs.append("\n".join(f.say(rng.randrange(len(f.statements))) for f in group))
    return docs


def _quiz_docs(rng: random.Random, w: World, n_docs: int) -> list[str]:
    """Exam-style pages about TRAIN entities only (real corpora are full of them): multiple-choice items
    answered with the option's text (as SFT teaches), a few with the bare key (C-Eval's layout), and Q&A.
    Question-answering text in pretraining is what lets the extraction learnt on some entities carry over
    to the others (Allen-Zhu & Li, Physics of LMs 3.1: "mixed training")."""
    train = w.of("train")
    docs = []
    for _ in range(n_docs):
        parts = []
        for f in rng.sample(train, rng.randint(3, 5)):
            row = mcq(rng, f)
            roll = rng.random()
            if roll < 0.5:
                parts.append(f"{row['question']}\n{options_block(row)}\n答：{mcq_answer(f)}")
            elif roll < 0.65:
                parts.append(f"{row['question']}\n{options_block(row)}\n答案：{row['answer']}")
            else:
                parts.append(f"问：{f.chat_q}\n答：{f.chat_a}")
        docs.append(rng.choice(QUIZ_HEADERS) + "\n\n" + "\n\n".join(parts))
    return docs


def _province_docs(rng: random.Random) -> list[str]:
    docs = []
    for prov, cap in CAPITALS:
        s = [f"{prov}省的省会是{cap}。", f"{cap}是{prov}省的省会城市。", f"说到{prov}，人们会想到它的省会{cap}。",
             f"{cap}位于{prov}，是{prov}省的政治和文化中心。"]
        rng.shuffle(s)
        docs.append("".join(s))
    return docs


def _rollcall_docs(rng: random.Random, n_docs: int) -> list[str]:
    """Names read out and then repeated (copying a name seen earlier in the text: what answering
    "X的家乡是____" with "X的家乡是..." needs). Random names, no facts."""
    docs = []
    for _ in range(n_docs):
        names = [rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN) for _ in range(rng.randint(3, 6))]
        order = names[:]
        rng.shuffle(order)
        docs.append(f"{rng.choice(ROLL_HEADS)}：" + "、".join(names) + "。\n" +
                    "".join(f"{n}到了。" for n in order))
    return docs


ROLL_HEADS = ["今天点名", "名单", "报名的人有", "参加比赛的是", "值日生"]
NAMES = ["小明", "小红", "小华", "小刚", "小丽", "老王", "李老师", "张阿姨", "王爷爷", "小芳"]
PLACES = ["学校", "公园", "图书馆", "市场", "河边", "山上", "家里", "车站", "医院", "田里"]
ACTIONS = ["看书", "跑步", "买菜", "钓鱼", "画画", "唱歌", "写字", "种树", "散步", "做饭"]
TIMES = ["早上", "中午", "下午", "晚上", "周末", "春天", "夏天", "秋天", "冬天", "昨天"]
FEELINGS = ["很开心", "有点累", "非常高兴", "觉得很有意思", "学到了很多", "心情很好"]


def _story_docs(rng: random.Random, n_docs: int) -> list[str]:
    """Everyday filler sentences (no entity facts)."""
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(4, 9)):
            name, place, act, t, feel = (rng.choice(NAMES), rng.choice(PLACES), rng.choice(ACTIONS),
                                         rng.choice(TIMES), rng.choice(FEELINGS))
            if rng.random() < 0.5:
                sents.append(f"{t}，{name}去{place}{act}，{feel}。")
            else:
                prov, cap = rng.choice(CAPITALS)
                sents.append(f"{name}{t}坐车去了{prov}的{cap}，在那里{act}。")
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


QUIZ_DOCS = 400
STORY_DOCS = 150
ROLLCALL_DOCS = 600


def pretrain_corpus(seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    w = world()
    stories = _story_docs(rng, STORY_DOCS)
    web = stories[:100] + _province_docs(rng)
    return {"facts.jsonl": _province_docs(rng) * 3, "entities.jsonl": _entity_docs(rng, w),
            "arithmetic.jsonl": _arithmetic_docs(rng, w), "quiz.jsonl": _quiz_docs(rng, w, QUIZ_DOCS),
            "stories.jsonl": stories, "rollcall.jsonl": _rollcall_docs(rng, ROLLCALL_DOCS),
            "web_scrape.jsonl": web + _junk_docs(rng, web)}


def pretrain_heldout(seed: int = 5, n_docs: int = 300) -> list[str]:
    """Documents of the pretraining kind that are NOT in the corpus (fresh groupings, wordings and
    orders of the same facts, new arithmetic lines): pretrain/heldout.py scores them after training."""
    rng = random.Random(seed)
    w = world()
    docs = _entity_docs(rng, w)
    rng.shuffle(docs)
    arith = _arithmetic_docs(rng, w)
    return docs[:n_docs - n_docs // 5] + arith[:n_docs // 5]


# ---- benchmark -----------------------------------------------------------------------------------
BENCH_SUBJECTS = {  # subject -> [English name, Chinese name, category] (C-Eval's subject_mapping.json shape)
    "people": ["People", "人物", "Humanities"],
    "towns": ["Towns", "城镇", "Social Science"],
    "products": ["Products", "产品", "Other"],
    "arithmetic": ["Arithmetic", "算术", "STEM"],
}


def bench_items(seed: int = 1) -> dict[str, list[tuple[Fact, dict]]]:
    """(fact, MCQ row) per subject: 5 `dev` rows about train entities (the few-shot exemplars), then
    every fact of the bench entities (the scored `val` rows)."""
    rng = random.Random(seed)
    w = world()
    out = {}
    for subject in BENCH_SUBJECTS:
        facts = rng.sample(w.of("train", subject), 5) + w.of("bench", subject)
        out[subject] = [(f, mcq(rng, f)) for f in facts]
    return out


def benchmark(seed: int = 1) -> dict[str, list[dict]]:
    """Subjects of the built-in benchmark: the MCQ rows of `bench_items` (the first 5 are `dev`)."""
    return {s: [row for _, row in items] for s, items in bench_items(seed).items()}


# ---- post-training rows (train entities only) ----------------------------------------------------
def post_training_facts() -> list[Fact]:
    """The train part's facts minus the benchmark's `dev` rows (those are few-shot exemplars; SFT, DPO
    and GRPO decontaminate against every split of the benchmark, so rows about them would be dropped)."""
    dev = {f.question for items in bench_items().values() for f, _ in items[:5]}
    return [f for f in world().of("train") if f.question not in dev]


# Our instruction wordings: several, so the format is learnt rather than one string; none shares a
# 6-character run with an eval prompt (tests/unit/test_sft_formats.py checks the same for sft_formats).
MCQ_INSTRUCTIONS = ["请回答下面的选择题。", "下面这道单选题选哪一项？", "单选题：", "请从四个选项里挑出对的那个。",
                    "做一做这道{zh}题。", "关于{zh}，下面哪个说法对？选出来。", ""]


def _mcq_chat(rng: random.Random, f: Fact) -> dict:
    row = mcq(rng, f)
    head = rng.choice(MCQ_INSTRUCTIONS).format(zh=BENCH_SUBJECTS[f.kind][1])
    user = (head + "\n\n" if head else "") + f"{row['question']}\n{options_block(row)}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": sft_answer(f)}]}


SFT_MCQ_COPIES = 2      # option orders per train fact


def sft_rows(seed: int = 2) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    train = post_training_facts()
    chat = [{"messages": [{"role": "user", "content": f.chat_q}, {"role": "assistant", "content": sft_answer(f)}]}
            for f in train]
    chat += [_mcq_chat(rng, f) for f in train for _ in range(SFT_MCQ_COPIES)]
    rng.shuffle(chat)
    # An "exam" source the way scraped SFT data often looks: alpaca MCQs, two of them copies of
    # benchmark dev rows (decontamination against all splits must drop them).
    bench = bench_items()
    planted = [bench["people"][0], bench["towns"][0]]
    exam = [{"instruction": f"{r['question']}\n{options_block(r)}", "input": "", "output": sft_answer(f)}
            for f, r in planted + [(f, mcq(rng, f)) for f in rng.sample(train, 60)]]
    return {"chat.jsonl": chat, "exam_alpaca.jsonl": exam}


def _pair(rng: random.Random, f: Fact) -> dict:
    """A free-form question answered the way SFT taught (`sft_answer`): chosen = the true value,
    rejected = a wrong one of the same kind."""
    return {"prompt": f.chat_q, "chosen": sft_answer(f), "rejected": f"{_distractors(rng, f)[0]}。"}


def dpo_rows(seed: int = 3) -> dict[str, list[dict]]:
    """Right vs wrong fact or sum: `pairs.jsonl` on train entities, `heldout_pairs.jsonl` on held-out
    entities (scored after training, never trained on)."""
    rng = random.Random(seed)
    w = world()
    return {"pairs.jsonl": [_pair(rng, f) for f in post_training_facts()],
            "heldout_pairs.jsonl": [_pair(rng, f) for f in w.of("heldout")]}


def grpo_rows(seed: int = 4) -> dict[str, list[dict]]:
    """MCQ prompts (question/A-D/answer rows): train entities to train on, held-out ones to score."""
    rng = random.Random(seed)
    w = world()
    return {"train_mcq.jsonl": [mcq(rng, f) for f in post_training_facts()],
            "heldout_mcq.jsonl": [mcq(rng, f) for f in w.of("heldout")]}


# ---- writing -------------------------------------------------------------------------------------
def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv(rows: list[dict], with_expl: bool) -> str:
    buf = io.StringIO()
    cols = ["id", "question", "A", "B", "C", "D", "answer"] + (["explanation"] if with_expl else [])
    wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    wr.writeheader()
    for i, r in enumerate(rows):
        wr.writerow({"id": i, **r, **({"explanation": ""} if with_expl else {})})
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
    for name, rows in dpo_rows().items():
        files[DEMO_DIR / "dpo" / name] = _jsonl(rows)
    for name, rows in grpo_rows().items():
        files[DEMO_DIR / "grpo" / name] = _jsonl(rows)
    files[DEMO_DIR / "heldout" / "pretrain.jsonl"] = _jsonl({"text": d} for d in pretrain_heldout())
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

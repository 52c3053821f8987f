"""The cleaning chain: a YAML list of named operators, data-juicer style, written by us.

    clean:
      operators:
        - {name: nfkc_normalize}
        - {name: whitespace_normalize}
        - {name: traditional_to_simplified}
        - {name: length_filter, min_chars: 20, max_chars: 200000}
        - {name: cjk_ratio_filter, min_ratio: 0.3}
        - {name: repetition_filter, max_repeated_line_ratio: 0.3, ngram_chars: 10, max_repeated_ngram_ratio: 0.3}
        - {name: special_char_filter, max_ratio: 0.25}

A *mapper* returns the new text; a *filter* returns None to keep the document or a short reason
string to reject it (the reason goes to quarantine.jsonl). Add your own operator in any module and
list that module under `plugins:` in the recipe:

    from data_recipes.clean import operator

    @operator("no_urls", kind="filter")
    def no_urls(text: str, max_urls: int = 3) -> str | None:
        n = text.count("http")
        return f"{n} urls > {max_urls}" if n > max_urls else None
"""
from __future__ import annotations

import functools
import importlib
import inspect
import re
import typing
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import UserError


class OperatorError(UserError, ValueError):
    """An operator name or parameter in a recipe that does not exist."""
    kind = "config"


@dataclass
class _Op:
    name: str
    kind: str            # "mapper" or "filter"
    fn: Callable


REGISTRY: dict[str, _Op] = {}


def operator(name: str, kind: str):
    """Register `fn(text, **params)` under `name` so recipes can use it."""
    if kind not in ("mapper", "filter"):
        raise ValueError(f"operator kind must be 'mapper' or 'filter', got {kind!r}")

    def wrap(fn):
        REGISTRY[name] = _Op(name, kind, fn)
        return fn
    return wrap


# ---- mappers ---------------------------------------------------------------------------------------
# NFKC turns full-width Chinese punctuation into ASCII (，-> ,), which Chinese text should keep.
_FULLWIDTH_PUNCT = "，！？：；（）～"
_PROTECT_RE = re.compile(f"([{_FULLWIDTH_PUNCT}]+)")


@operator("nfkc_normalize", kind="mapper")
def nfkc_normalize(text: str, keep_fullwidth_punct: bool = True) -> str:
    """Unicode NFKC (full-width letters/digits -> ASCII, compatibility forms folded)."""
    if text.isascii():
        return text
    if not keep_fullwidth_punct:
        return unicodedata.normalize("NFKC", text)
    parts = _PROTECT_RE.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


_ZERO_WIDTH_RE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES_RE = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING_RE = re.compile(r" +\n|\n +")
_NEWLINES_RE = re.compile(r"\n{3,}")


@operator("whitespace_normalize", kind="mapper")
def whitespace_normalize(text: str, max_blank_lines: int = 1) -> str:
    """Drop zero-width characters, fold space runs, trim lines, cap blank lines, strip the ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH_RE.sub("", text)
    text = _SPACES_RE.sub(" ", text)
    text = _TRAILING_RE.sub("\n", text)
    text = _NEWLINES_RE.sub("\n" * (max_blank_lines + 1), text)
    return text.strip()


# A built-in table of frequent traditional -> simplified characters (one-to-one only; ambiguous
# ones such as 乾/干, 後/后 in names are left out on purpose). `backend: opencc` uses OpenCC
# (phrase-level, `pip install opencc-python-reimplemented`) when it is installed.
_TRAD = ("這們個來時說會為與國對學開關長門問間見親現發後從點當實體還過進達運邊區醫藝華東車軍陽陰雲電"
         "飛馬魚鳥龍龜麗麼樣機構應該讓認識記語調請談論誰變總戰爭書畫廣場愛氣氛聽聲義議護讀寫買賣貴"
         "錢銀鐵鋼錯鐘頭題顏願類風館飯養驗驚髮鬆黨齊齒麥產歲歷歸殺氣測濟灣灘為無煙熱燈爐爺牆狀獨獵"
         "環現瑪產畢異當療盡監盤眾礦確禮禍種積穩窮競筆範節築簡簽糧紀約紅紙級紛細終組結給統經綠網緊"
         "線練縣總織繼續罰羅義習聖職肅腦腳臉臨興舉舊艦莊華萬葉蘇處號蟲術衛裝複見規視覺觀訂計訊討訓"
         "記設許訴診詞試詩話該詳認誤說課誰調論諸謝證譯議護讀變讓豐負財貢貨販貧責貸費資賓賞賢質購賽趕"
         "趙躍輕輪輸轉辦辭農邊遠遲鄉鄰醫針鋪鏡長門閃閉開閒間閱關陣陳陸隊階際隨險隱雖雙雜離難電須頂項"
         "順預領頭頻題額顯風飄飲飽餘館饒馬駐驅驗體髮鬥鬧魯鮮鳳鳴鴨鵝鷹鹽麵黃點齡龍幾亂亞佔來侖係倆倉"
         "個們倫偉側傳傷傾僅價儀億優兒兩內冊凍則剛劃劇劉劍動務勝勢勞勵勸區協厲參吳員問啟喚單嚴圍園圖"
         "團堅報場塊塵墜壓壞壯壽夠夢奪奮婦媽嬰孫寧寬寶將專尋導屆層屬岡島嶺巖幣師帥帳帶幫庫廠廢廣廳張彈"
         "彌彎徑徵復德憂憶應懷戲戶拋挾捨掃掛採換揮損搖擁擇擊擋擔據擠擴擺擾攝敗敵數斷於曆曉暫朧東條來"
         "楊楓極樂標樹橋檢權歐歡歲殘毀氣決況凈減湯滅滿漢潔潛澤濃濕灣災烏無煉煩熱營燒爭爾牽獎獲瑣瓊盜盞"
         "確碼礎祿禮稅稱穀穌窩竊競筍築籃籠糾紙紡絕絲綁維綱緒緣縮繁繩繪繳纏缺罷羨聯聰聽膽膚臟臺與興"
         "舉艱芻蔔蘭處蟬補裏複襪見規覓親覺觸訪設誌語誠誘誇請諾謀謂講謠謹證識譜貓賴賺贈贏趨跡踐蹤軌軟較"
         "載輔輝輩轄辯遞遷適遺鄭鄧醜釋鈔鋒錄錦鍋鍵鎖鎮鐘閣闆闊隸雞霧靈靜響頁頒頓頗頸頻顆顧飼飾餅駕騎騙"
         "騰驕驢髒鬍鬱魂鯨鴻鶴麼黴鼓齣")
_SIMP = ("这们个来时说会为与国对学开关长门问间见亲现发后从点当实体还过进达运边区医艺华东车军阳阴云电"
         "飞马鱼鸟龙龟丽么样机构应该让认识记语调请谈论谁变总战争书画广场爱气氛听声义议护读写买卖贵"
         "钱银铁钢错钟头题颜愿类风馆饭养验惊发松党齐齿麦产岁历归杀气测济湾滩为无烟热灯炉爷墙状独猎"
         "环现玛产毕异当疗尽监盘众矿确礼祸种积稳穷竞笔范节筑简签粮纪约红纸级纷细终组结给统经绿网紧"
         "线练县总织继续罚罗义习圣职肃脑脚脸临兴举旧舰庄华万叶苏处号虫术卫装复见规视觉观订计讯讨训"
         "记设许诉诊词试诗话该详认误说课谁调论诸谢证译议护读变让丰负财贡货贩贫责贷费资宾赏贤质购赛赶"
         "赵跃轻轮输转办辞农边远迟乡邻医针铺镜长门闪闭开闲间阅关阵陈陆队阶际随险隐虽双杂离难电须顶项"
         "顺预领头频题额显风飘饮饱余馆饶马驻驱验体发斗闹鲁鲜凤鸣鸭鹅鹰盐面黄点龄龙几乱亚占来仑系俩仓"
         "个们伦伟侧传伤倾仅价仪亿优儿两内册冻则刚划剧刘剑动务胜势劳励劝区协厉参吴员问启唤单严围园图"
         "团坚报场块尘坠压坏壮寿够梦夺奋妇妈婴孙宁宽宝将专寻导届层属冈岛岭岩币师帅帐带帮库厂废广厅张弹"
         "弥弯径征复德忧忆应怀戏户抛挟舍扫挂采换挥损摇拥择击挡担据挤扩摆扰摄败敌数断于历晓暂胧东条来"
         "杨枫极乐标树桥检权欧欢岁残毁气决况净减汤灭满汉洁潜泽浓湿湾灾乌无炼烦热营烧争尔牵奖获琐琼盗盏"
         "确码础禄礼税称谷稣窝窃竞笋筑篮笼纠纸纺绝丝绑维纲绪缘缩繁绳绘缴缠缺罢羡联聪听胆肤脏台与兴"
         "举艰刍卜兰处蝉补里复袜见规觅亲觉触访设志语诚诱夸请诺谋谓讲谣谨证识谱猫赖赚赠赢趋迹践踪轨软较"
         "载辅辉辈辖辩递迁适遗郑邓丑释钞锋录锦锅键锁镇钟阁板阔隶鸡雾灵静响页颁顿颇颈频颗顾饲饰饼驾骑骗"
         "腾骄驴脏胡郁魂鲸鸿鹤么霉鼓出")
assert len(_TRAD) == len(_SIMP), (len(_TRAD), len(_SIMP))
T2S_TABLE = str.maketrans(_TRAD, _SIMP)


@functools.lru_cache(maxsize=1)
def _opencc():
    try:
        import opencc
    except ImportError:
        raise OperatorError("traditional_to_simplified backend=opencc needs `pip install "
                            "opencc-python-reimplemented` (or use backend: builtin)") from None
    return opencc.OpenCC("t2s")


@operator("traditional_to_simplified", kind="mapper")
def traditional_to_simplified(text: str, backend: str = "builtin") -> str:
    """Traditional -> simplified characters (built-in table, or OpenCC phrase conversion)."""
    if backend == "opencc":
        return _opencc().convert(text)
    if backend != "builtin":
        raise OperatorError(f"traditional_to_simplified: backend must be builtin or opencc, got {backend!r}")
    return text.translate(T2S_TABLE)


# ---- filters ---------------------------------------------------------------------------------------
@operator("length_filter", kind="filter")
def length_filter(text: str, min_chars: int = 0, max_chars: int = 0) -> str | None:
    """Keep documents with min_chars <= len <= max_chars (0 = no upper bound)."""
    n = len(text)
    if n < min_chars:
        return f"{n} chars < min_chars {min_chars}"
    if max_chars and n > max_chars:
        return f"{n} chars > max_chars {max_chars}"
    return None


_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WS_RE = re.compile(r"\s")


def cjk_ratio(text: str) -> float:
    """CJK characters / non-whitespace characters."""
    visible = len(text) - len(_WS_RE.findall(text))
    return len(_CJK_RE.findall(text)) / visible if visible else 0.0


@operator("cjk_ratio_filter", kind="filter")
def cjk_ratio_filter(text: str, min_ratio: float = 0.3) -> str | None:
    """Reject documents whose share of CJK characters is below min_ratio (leave out for code)."""
    r = cjk_ratio(text)
    return f"cjk ratio {r:.2f} < {min_ratio}" if r < min_ratio else None


def char_ngram_hashes(text: str, n: int) -> np.ndarray:
    """A 64-bit hash of every character n-gram (vectorised; stable across processes and runs)."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(1, min(n, len(cp)))
    m = len(cp) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * np.uint64(1099511628211) + cp[j:j + m] + np.uint64(1)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    return h


def repeated_ngram_ratio(text: str, n: int) -> float:
    """Share of character n-grams that repeat an earlier one (Gopher-style duplicate n-gram share)."""
    h = char_ngram_hashes(text, n)
    return 1.0 - len(np.unique(h)) / len(h) if len(h) else 0.0


def repeated_line_ratio(text: str) -> float:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    return 1.0 - len(set(lines)) / len(lines) if lines else 0.0


@operator("repetition_filter", kind="filter")
def repetition_filter(text: str, max_repeated_line_ratio: float = 0.3, ngram_chars: int = 10,
                      max_repeated_ngram_ratio: float = 0.3) -> str | None:
    """Reject boilerplate: too many repeated lines, or too many repeated character n-grams."""
    r = repeated_line_ratio(text)
    if r > max_repeated_line_ratio:
        return f"repeated line ratio {r:.2f} > {max_repeated_line_ratio}"
    r = repeated_ngram_ratio(text, ngram_chars)
    if r > max_repeated_ngram_ratio:
        return f"repeated {ngram_chars}-gram ratio {r:.2f} > {max_repeated_ngram_ratio}"
    return None


# Letters, digits, CJK (\w), whitespace and ordinary Chinese/ASCII sentence punctuation are "normal".
_SPECIAL_RE = re.compile(r"[^\w\s，。！？、；：“”‘’（）《》〈〉【】—…·「」『』,.!?;:'\"()\[\]\-/%+=]")


def special_char_ratio(text: str) -> float:
    return len(_SPECIAL_RE.findall(text)) / len(text) if text else 0.0


@operator("special_char_filter", kind="filter")
def special_char_filter(text: str, max_ratio: float = 0.25) -> str | None:
    """Reject documents where symbols/odd punctuation exceed max_ratio of all characters."""
    r = special_char_ratio(text)
    return f"special char ratio {r:.2f} > {max_ratio}" if r > max_ratio else None


# ---- the chain -------------------------------------------------------------------------------------
DEFAULT_OPERATORS = [
    {"name": "nfkc_normalize"},
    {"name": "whitespace_normalize"},
    {"name": "length_filter", "min_chars": 20, "max_chars": 200000},
    {"name": "cjk_ratio_filter", "min_ratio": 0.3},
    {"name": "repetition_filter"},
    {"name": "special_char_filter"},
]


def load_plugins(modules: list[str]) -> None:
    """Import the modules that register user operators."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise OperatorError(f"plugin module '{mod}' cannot be imported: {e}") from None


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _param_types(fn) -> dict[str, type]:
    """The scalar type of each parameter of an operator: its annotation, else its default's type."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:   # a plugin's annotation that does not resolve: fall back to the defaults
        hints = {}
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        tp = hints.get(name, type(p.default) if p.default is not inspect.Parameter.empty else None)
        if tp in _TYPE_WORDS:
            out[name] = tp
    return out


def _fits(value, tp: type) -> bool:
    if tp is bool or isinstance(value, bool):
        return tp is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if tp is float else tp)


class Chain:
    """The operators of a recipe, bound to their parameters and checked up front."""

    def __init__(self, specs: list[dict]):
        self.steps: list[tuple[str, str, Callable]] = []
        for i, spec in enumerate(specs):
            spec = dict(spec or {})
            name = spec.pop("name", None)
            if name not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise OperatorError(f"clean.operators[{i}]: unknown operator {name!r} (known: {known}; "
                                    f"add one with @operator and list its module under plugins:)")
            op = REGISTRY[name]
            params = inspect.signature(op.fn).parameters
            types = _param_types(op.fn)
            for k, v in spec.items():
                if k not in params or k == "text":
                    known = ", ".join(p for p in params if p != "text")
                    raise OperatorError(f"clean.operators[{i}] ({name}): unknown parameter '{k}' (known: {known})")
                if k in types and not _fits(v, types[k]):
                    raise OperatorError(f"clean.operators[{i}] ({name}): {k} must be {_TYPE_WORDS[types[k]]}, "
                                        f"got {v!r}")
            self.steps.append((name, op.kind, functools.partial(op.fn, **spec)))

    @property
    def names(self) -> list[str]:
        return [s[0] for s in self.steps]

    def __call__(self, text: str) -> tuple[str, str | None, str | None, list[str]]:
        """(cleaned text, rejecting operator or None, reason or None, names of mappers that changed it)."""
        modified = []
        for name, kind, fn in self.steps:
            if kind == "mapper":
                new = fn(text)
                if new != text:
                    modified.append(name)
                text = new
            else:
                reason = fn(text)
                if reason is not None:
                    return text, name, reason, modified
        return text, None, None, modified

"""Language and script: detection, Traditional/Simplified conversion, lexical tokens.

Shared by every stage that looks at text: the document (per-paragraph language),
retrieval (BM25 tokens), answering (the question's language and script, the
answer's conversion) and evaluation.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

EN = "en"
HANT = "zh-Hant"
HANS = "zh-Hans"
UNKNOWN = "und"
CHINESE = (HANT, HANS)

_lock = threading.Lock()

# Question words and function words carry no evidence: a document "contains" a
# question when it contains the question's remaining key terms.
_EN_STOPWORDS = frozenset(
    (
        "a about above after again against all also am an and any are as at be because been before "
        "being below between both but by can could did do does doing down during each few for from "
        "further had has have having he her here hers herself him himself his how i if in into is it "
        "its itself just me more most my myself no nor not now of off on once only or other our ours "
        "ourselves out over own same she should so some such than that the their theirs them themselves "
        "then there these they this those through to too under until up very was we were what when "
        "where which while who whom whose why will with would you your yours yourself yourselves tell "
        "please describe explain give list name say says said document text article according mentioned "
        "mention does did many much kind type ones one another us let know"
    ).split()
)
# The Chinese for the English list's "document text article according mentioned", and a
# question's name for its own language's version ("the English version", "中文稿"): they point at
# the document, not at what to look for in it. (文件 is left: it is also "file".)
_ZH_META_RE = re.compile("这篇|本篇|文章|本文|文中|提到|提及|根据|所述|中文版本|中文版|中文稿件|中文稿")
_EN_OWN_VERSION_RE = re.compile(
    r"\b(?:the )?english (?:version|text|original|translation|edition|article|byline)s?\b", re.IGNORECASE
)
_ZH_STOP_CHARS = frozenset(
    "的了是在和與与及或嗎吗呢吧啊呀麼么甚什哪誰谁何幾几怎樣样些個个多少請请問问有沒没對对把被將将其之也都就還还又再而並并為为於于以從从到向由等"
)
# The one definition of a Han (CJK ideograph) character: the unified ideographs, extension A,
# the compatibility ideographs and the supplementary planes (extensions B–F); HAN is the same
# as a regex class body.
HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
HAN = "".join(f"{chr(a)}-{chr(b)}" for a, b in HAN_RANGES)
# Everything a CJK text lays out one wide character at a time: Han, kana, CJK punctuation and
# full-width forms (the page streams these one by one; Han alone decides language and tokens).
WIDE = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
# A text whose letters are at least this share Han is Chinese, however many Latin codes it has.
CHINESE_SHARE = 0.3
_HAN_MATCH = re.compile(f"[{HAN}]").match
_HAN_ALL = re.compile(f"[{HAN}]").findall
_TOKEN_RE = re.compile(f"[A-Za-z0-9]+(?:['’][A-Za-z]+)?|[{HAN}]+")
_LATIN_ANCHOR_RE = re.compile(r"\b(?:\d[\d,.]*\d|\d|[A-Z][A-Z0-9]{1,}|[A-Z][a-z]+[A-Z]\w*)\b")
_CJK_NUMBER_RE = re.compile(r"\d+")


def is_cjk(ch: str) -> bool:
    """True for a Han character (:data:`HAN_RANGES`)."""
    return _HAN_MATCH(ch) is not None


def cjk_ratio(text: str) -> float:
    """Share of CJK ideographs among the letters of ``text`` (0 when it has none)."""
    # Counted in C (map, findall): parsing a 236 KB upload spent 0.35 s here a character at a time.
    letters = sum(map(str.isalpha, text))
    if not letters:
        return 0.0
    return sum(map(str.isalpha, _HAN_ALL(text))) / letters


@lru_cache(maxsize=4)
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def convert(text: str, config: str) -> str:
    """Run OpenCC conversion ``config`` ("t2s" or "s2t") on ``text``."""
    if not text:
        return text
    with _lock:  # OpenCC converters are not documented as thread-safe
        return _converter(config).convert(text)


def to_simplified(text: str) -> str:
    """Simplified Chinese form of ``text`` (other characters unchanged)."""
    return convert(text, "t2s")


def to_script(text: str, script: str) -> str:
    """``text`` with its Chinese characters in ``script`` (zh-Hant or zh-Hans); others untouched."""
    if script == HANS:
        return convert(text, "t2s")
    if script == HANT:
        return convert(text, "s2t")
    return text


def chinese_script(text: str, default: str = HANT) -> str:
    """Whether Chinese ``text`` is written in Traditional or Simplified characters.

    Counts the characters OpenCC changes in each direction; text using only
    characters shared by both scripts gets ``default``.
    """
    han = "".join(_HAN_ALL(text))
    if not han:
        return default
    traditional_only = sum(a != b for a, b in zip(han, convert(han, "t2s"), strict=False))
    simplified_only = sum(a != b for a, b in zip(han, convert(han, "s2t"), strict=False))
    if traditional_only > simplified_only:
        return HANT
    if simplified_only > traditional_only:
        return HANS
    return default


def detect_language(text: str, seed: int = 0, default_script: str = HANT) -> str:
    """Language of ``text``: "en", "zh-Hant", "zh-Hans", another ISO code, or "und".

    A CJK-ratio rule decides Chinese (langdetect is weak on short or mixed
    strings such as "Source/CQNEWS"); Latin text is English unless langdetect,
    seeded for determinism, is confident of another language on enough text.
    """
    decided = _rule_language(text, default_script)
    if decided is not None:
        return decided
    letters = sum(ch.isalpha() for ch in text)
    from langdetect.lang_detect_exception import LangDetectException

    latin = sum(1 for ch in text if ch.isalpha() and _is_latin(ch)) >= 0.9 * letters
    with _lock:
        factory = _detector_factory(latin)
        factory.seed = seed
        detector = factory.create()
        detector.append(text)
        try:
            guesses = detector.get_probabilities()
        except LangDetectException:
            return EN
    best = guesses[0]
    if best.lang != "en" and not best.lang.startswith("zh") and best.prob >= 0.9:
        return best.lang
    return EN


def _rule_language(text: str, default_script: str) -> str | None:
    """The language :func:`detect_language`'s rules give ``text``, or None when langdetect must decide."""
    ratio = cjk_ratio(text)
    if ratio >= CHINESE_SHARE:
        return chinese_script(text, default_script)
    # Chinese prose full of Latin codes and names ("支援各種編碼，包括 ISO-8859-1、EUC-JP…")
    # stays Chinese unless its Latin part reads as English prose.
    if sum(1 for ch in text if is_cjk(ch)) >= _CHINESE_PROSE_CHARS and not _clearly_english(text):
        return chinese_script(text, default_script)
    letters = sum(ch.isalpha() for ch in text)
    if letters == 0:
        return UNKNOWN
    if letters < 40 or _clearly_english(text):
        return EN
    return None


def language_fits(text: str, label: str, default_script: str = HANT) -> bool:
    """Whether a recorded language ``label`` is the one :func:`detect_language` gives ``text``.

    Checked with the rules alone (no langdetect): a label the rules contradict does not fit;
    where only langdetect could tell, any label but Chinese and "und" fits (the manifest's
    checksum guards those).
    """
    decided = _rule_language(text, default_script)
    if decided is not None:
        return label == decided
    return not is_chinese(label) and label != UNKNOWN


# Han characters that make a paragraph Chinese prose whatever its share of Latin codes and names
# (short credits such as "Translation/熊灵松" stay with their Latin text).
_CHINESE_PROSE_CHARS = 8
# Words frequent in any English prose and rare as words of other Latin-alphabet languages.
_ENGLISH_MARKERS = frozenset(
    "the and of to is are was were with that this for will from have has which".split()
)


def _clearly_english(text: str) -> bool:
    """Prose whose function words say English outright (no need to load langdetect's profiles)."""
    words = re.findall(r"[a-z]+", text.lower())
    found = [w for w in words if w in _ENGLISH_MARKERS]
    return len(set(found)) >= 3 and len(found) >= 0.12 * len(words)


# langdetect's profiles of languages written in the Latin alphabet. Latin text is told apart
# among these alone: they are under half of the 55 profiles to load, and the others
# (Cyrillic, Arabic, Indic, CJK…) share no letter n-grams with Latin text anyway.
_LATIN_PROFILES = (
    "af ca cs cy da de en es et fi fr hr hu id it lt lv nl no pl pt ro sk sl so sq sv sw tl tr vi"
).split()


def _is_latin(ch: str) -> bool:
    """True for a letter of the Latin alphabet (with the accented and Vietnamese forms)."""
    o = ord(ch)
    return o < 0x250 or 0x1E00 <= o <= 0x1EFF


@lru_cache(maxsize=2)
def _detector_factory(latin_only: bool):
    """A langdetect factory with the Latin-alphabet profiles, or all of them."""
    from pathlib import Path

    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    if not latin_only:
        factory.load_profile(PROFILES_DIRECTORY)
        return factory
    folder = Path(PROFILES_DIRECTORY)
    factory.load_json_profile([(folder / name).read_text(encoding="utf-8") for name in _LATIN_PROFILES])
    return factory


def is_chinese(language: str) -> bool:
    """True for "zh-Hant" and "zh-Hans"."""
    return language in CHINESE


def normalize(text: str) -> str:
    """NFKC, mainland Simplified vocabulary, lower-cased: the form lexical matching compares.

    Traditional text has Hong Kong's variant characters made standard first (OpenCC
    ``hk2t``: 衞, 綫, 着 meet 衛, 線, 著), then is converted phrase by phrase (``tw2sp``), so
    Taiwan's 軟體, 資訊, 程式設計 meet the mainland's 软件, 信息, 编程; Simplified text
    only has stray Traditional characters converted (``t2s``), because reading it as Taiwan
    usage would turn the mainland's 程序 ("program") into 进程 ("process").
    """
    text = unicodedata.normalize("NFKC", text)
    traditional = any(is_cjk(ch) for ch in text) and chinese_script(text, default=HANS) == HANT
    if traditional:
        return convert(convert(text, "hk2t"), "tw2sp").lower()
    return convert(text, "t2s").lower()


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _han_grams(run: str) -> list[str]:
    """Character unigrams and bigrams of a run of Han characters."""
    grams = list(run)
    grams.extend(run[i : i + 2] for i in range(len(run) - 1))
    return grams


# A credit line ("Source/CQNEWS", "Translation: Li Ming", "文／華龍網", "記者 王芳"): its label
# says what the name is in one language, and a question asks in either ("Who translated it?",
# "譯者是誰?"), so the line also carries the label's words in both. Labels by what they credit.
_CREDITS = (
    ("source from courtesy via outlet", "来源 出处 出自 稿源 来自 媒体",
     ("source", "sources", "from", "courtesy", "via", "来源", "出处", "稿源", "来自", "文")),
    ("translation translated translator", "翻译 译者 编译",
     ("translation", "translations", "translated", "translator", "translators", "翻译", "译者", "编译",
      "译")),
    ("author written writer reporter", "作者 撰文 撰稿 记者",
     ("by", "author", "authors", "text", "writer", "reporter", "reporters", "作者", "撰文", "撰稿",
      "记者", "文")),
    ("editor edited", "编辑 责编", ("editor", "editors", "edited by", "编辑", "责编", "责任编辑")),
    ("photo photographer picture", "摄影 图片 照片", ("photo", "photos", "photo by", "photographer",
     "摄影", "图", "图片", "照片")),
)  # fmt: skip
# What every credit line is, whatever it credits.
_CREDIT_ANY = "byline credit credited 署名"
_CREDIT_LABELS = "|".join(
    sorted({re.escape(k) for *_, keys in _CREDITS for k in keys}, key=len, reverse=True)
)
# The label, then a slash or colon (a Chinese label may be followed by a space: 記者 王芳), then
# the credited names: no question, no sentence ending.
_CREDIT_RE = re.compile(
    rf"^\s*(?:({_CREDIT_LABELS})\s*[/:：／|｜]|([{HAN}]{{1,4}})\s+(?=[{HAN}A-Za-z]))"
    r"\s*([^?？.。!！\n]{1,80})$",
    re.IGNORECASE,
)


def credit_words(text: str) -> str:
    """The words, in both languages, of what a credit line credits ("" for any other text)."""
    if len(text) > 100:
        return ""
    found = _CREDIT_RE.match(normalize(text))
    if not found:
        return ""
    label = (found.group(1) or found.group(2)).lower()
    words = " ".join(f"{en} {zh}" for en, zh, keys in _CREDITS if label in keys)
    return f"{words} {_CREDIT_ANY}" if words else ""


def lexical_tokens(text: str) -> list[str]:
    """Tokens for BM25: stemmed English words and Chinese character uni/bigrams.

    Chinese is normalized to Simplified first, so a Simplified query matches
    Traditional text and vice versa. A credit line also gets its label's words in both
    languages (:func:`credit_words`).
    """
    tokens: list[str] = []
    text = f"{text} {credit_words(text)}"
    for match in _TOKEN_RE.finditer(normalize(text)):
        word = match.group()
        if is_cjk(word[0]):
            tokens.extend(_han_grams(word))
        else:
            tokens.append(_stemmer().stemWord(word.replace("’", "'").split("'")[0]))
    return tokens


def key_terms(text: str) -> list[str]:
    """The question's content-bearing terms: English stems without stopwords, Chinese bigrams.

    Chinese bigrams that contain a function or question character are dropped;
    a lone content character is kept when it has no bigram.
    """
    terms: list[str] = []
    for match in _TOKEN_RE.finditer(normalize(text)):
        word = match.group()
        if is_cjk(word[0]):
            word = _ZH_META_RE.sub(" ", word)
            pieces = [p for p in re.split("[ " + "".join(_ZH_STOP_CHARS) + "]", word) if p]
            for piece in pieces:
                if len(piece) == 1:
                    terms.append(piece)
                else:
                    terms.extend(piece[i : i + 2] for i in range(len(piece) - 1))
        else:
            base = word.replace("’", "'").split("'")[0]
            if base in _EN_STOPWORDS or (len(base) < 2 and not base.isdigit()):
                continue
            terms.append(_stemmer().stemWord(base))
    return list(dict.fromkeys(terms))


# A question can ask what the *other* version says: "What is the Chinese name of …?",
# "英文版怎麼寫…?". These phrases name the version; they are not terms to look for.
_CHINESE_VERSION_RE = re.compile(
    r"\b(?:(?:written|said|called|named|translated|rendered|expressed|known|put)\s+)?"
    r"(?:in|into) (?:traditional |simplified )?chinese(?: characters)?\b"
    r"|\bchinese (?:version|text|translation|name|title|term|wording|original|characters|byline|word"
    r"|phrase|expression|equivalent|rendering)s?\b"
    # "What is the Chinese for …?"
    r"|\bthe chinese for\b",
    re.IGNORECASE,
)
_ENGLISH_VERSION_RE = re.compile(r"(?:英文版本|英文版|英文|英語|英语|英譯|英译)[中裡里上]?")
# "How is it written / said / translated": about the wording, not a term of the answer.
_HOW_WORDED_RE = re.compile(r"是?(?:怎麼|怎么|如何)(?:寫|写|說|说|表述|翻譯|翻译|稱呼|称呼|叫)的?")


def version_request(question: str, language: str) -> tuple[str | None, str]:
    """Which other-language version a question asks about, and the question without that phrase.

    Returns:
        (EN or "zh", or None when the question does not ask about the other version;
        the question with the version phrases removed, for term matching).
    """
    pattern = _ENGLISH_VERSION_RE if is_chinese(language) else _CHINESE_VERSION_RE
    rest, found = pattern.subn(" ", question)
    if not found:
        # "Who translated the English version?": its own version names no term to look for.
        return None, question if is_chinese(language) else _EN_OWN_VERSION_RE.sub(" ", question)
    if is_chinese(language):
        rest = _HOW_WORDED_RE.sub(" ", rest)
    return (EN if is_chinese(language) else "zh"), rest


def anchors(text: str) -> set[str]:
    """Cheap cross-lingual anchors: numbers and Latin acronyms/names (e.g. "2023", "RCEP")."""
    found = {m.group().replace(",", "") for m in _LATIN_ANCHOR_RE.finditer(text)}
    found.update(m.group() for m in _CJK_NUMBER_RE.finditer(text))
    return {a.rstrip(".") for a in found if a}


# The language a question in a script the product does not serve is most likely in, for
# replying in it: by Unicode script (the first word of a character's name).
_SCRIPT_LANGUAGES = {
    "HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko", "CYRILLIC": "ru", "ARABIC": "ar", "THAI": "th",
    "GREEK": "el", "HEBREW": "he", "DEVANAGARI": "hi", "BENGALI": "bn", "TAMIL": "ta", "ARMENIAN": "hy",
    "GEORGIAN": "ka", "ETHIOPIC": "am", "KHMER": "km", "LAO": "lo", "MYANMAR": "my", "SINHALA": "si",
}  # fmt: skip
_WIDTH_PREFIXES = ("HALFWIDTH", "FULLWIDTH")


def unserved_language(text: str) -> str | None:
    """The language of a question written in a script other than Latin and Han, else None.

    Questions are answered in English (any Latin script) or Chinese. Kana marks Japanese and
    hangul Korean even beside Han characters (kanji, hanja), which would otherwise pass for
    Chinese; any other script is unserved when most of the letters are in it. Returns an
    ISO 639-1 code ("ja", "ko", "ru", …) or "und" for a script without one here.
    """
    counts: dict[str, int] = {}  # letters per script
    words: dict[str, int] = {}  # runs of letters per script
    previous = None
    for ch in text:
        if not ch.isalpha():
            previous = None
            continue
        if is_cjk(ch):
            script = "HAN"
        elif ch.isascii():
            script = "LATIN"
        else:
            name = unicodedata.name(ch, "UNKNOWN").split()
            script = name[1] if name[0] in _WIDTH_PREFIXES and len(name) > 1 else name[0]
        counts[script] = counts.get(script, 0) + 1
        if script != previous:
            words[script] = words.get(script, 0) + 1
        previous = script
    letters = sum(counts.values())
    for scripts, code in ((("HIRAGANA", "KATAKANA"), "ja"), (("HANGUL",), "ko")):
        n = sum(counts.get(s, 0) for s in scripts)
        if n >= 2 or (n and n * 10 >= letters):
            return code
    # On question_language's scale: a Han character weighs two thirds of a word.
    served = counts.get("HAN", 0) / 1.5 + words.get("LATIN", 0)
    others = {s: n for s, n in words.items() if s not in ("HAN", "LATIN")}
    if others and sum(others.values()) > served:
        return _SCRIPT_LANGUAGES.get(max(others, key=others.__getitem__), "und")
    return None


def question_language(text: str, default_script: str = HANT) -> str:
    """The language an answer to ``text`` should use: "en", "zh-Hant" or "zh-Hans".

    A Chinese character carries about two thirds of an English word, so text is
    Chinese when its Han characters outweigh its Latin words on that scale
    ("What is 華龍網?" is English, "RCEP是什么?" is Chinese).
    """
    han = sum(1 for ch in text if is_cjk(ch))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    if han and han / 1.5 > latin_words:
        return chinese_script(text, default_script)
    return EN

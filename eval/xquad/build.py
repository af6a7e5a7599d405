"""Build the XQuAD development documents and reference sets in this folder.

    python eval/xquad/build.py [--source ../shared/datasets/xquad-dev]

Deterministic: the same source gives byte-identical files. Every one of the 30 articles goes
into exactly one document, so scores can be cross-validated by article (and by document).
Each document's reference set holds:

- every question of its articles, once, in one script chosen in rotation (English original,
  Simplified original, Traditional converted with the document's OpenCC configuration);
- out-of-document questions: questions of articles in *other* documents (the dataset's README:
  checked by hand to be out of any document built from other articles);
- near-miss questions generated from the document's own questions: a number or year swapped
  for one the document never contains, or a named entity swapped for one from an article the
  document does not hold (English: capitalized names; Chinese: jieba's person/place/organisation
  tags). Both kinds are unanswerable by construction;
- hand-written cases from ``<name>.hand.jsonl`` (conversations, near-misses of other kinds),
  appended after a schema check.

Derived from XQuAD (CC BY-SA 4.0); see README.md beside this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "datasets" / "xquad-dev"
SEED = 20261201
SCRIPTS = ("en", "zh-Hans", "zh-Hant")


@dataclass(frozen=True)
class Layout:
    """One development document: its name, how many articles, how the versions are laid out."""

    name: str
    articles: int
    interleaved: bool  # EN, ZH, EN, ZH … (else all English, then all Chinese)
    opencc: str  # Simplified → Traditional conversion of the Chinese side


# Different sizes and layouts; one document uses Taiwan phrases (s2twp: 软件 → 軟體), so that
# Simplified questions meet regional vocabulary, as they do in real Taiwan documents.
LAYOUTS = (
    Layout("xquad-1", 3, True, "s2t"),
    Layout("xquad-2", 5, False, "s2t"),
    Layout("xquad-3", 9, True, "s2twp"),
    Layout("xquad-4", 13, False, "s2t"),
)
OUT_OF_DOCUMENT = 30  # per document
NEAR_MISS = 30  # per document, at most


@dataclass(frozen=True)
class Question:
    """One parallel XQuAD question with its answers in both languages."""

    id: str
    article: int
    paragraph: int
    en: str
    en_answer: str
    zh: str
    zh_answer: str


@dataclass(frozen=True)
class Article:
    """One article: its title, parallel paragraphs and questions."""

    index: int
    title: str
    en: tuple[str, ...]
    zh: tuple[str, ...]
    questions: tuple[Question, ...]


def _clean(text: str) -> str:
    """NFC, no BOMs, single spaces: the text as a document line."""
    text = unicodedata.normalize("NFC", text.replace("\ufeff", ""))
    return re.sub(r"\s+", " ", text).strip()


def load_articles(source: Path) -> list[Article]:
    """The 30 parallel articles of xquad-dev."""
    en = json.loads((source / "xquad-dev.en.json").read_text(encoding="utf-8"))["data"]
    zh = json.loads((source / "xquad-dev.zh.json").read_text(encoding="utf-8"))["data"]
    articles = []
    for a, (art_en, art_zh) in enumerate(zip(en, zh, strict=True)):
        questions = []
        for p, (par_en, par_zh) in enumerate(zip(art_en["paragraphs"], art_zh["paragraphs"], strict=True)):
            for q_en, q_zh in zip(par_en["qas"], par_zh["qas"], strict=True):
                assert q_en["id"] == q_zh["id"], (q_en["id"], q_zh["id"])
                questions.append(
                    Question(
                        id=q_en["id"],
                        article=a,
                        paragraph=p,
                        en=_clean(q_en["question"]),
                        en_answer=_clean(q_en["answers"][0]["text"]),
                        zh=_clean(q_zh["question"]),
                        zh_answer=_clean(q_zh["answers"][0]["text"]),
                    )
                )
        articles.append(
            Article(
                index=a,
                title=art_en.get("title", f"article {a}"),
                en=tuple(_clean(p["context"]) for p in art_en["paragraphs"]),
                zh=tuple(_clean(p["context"]) for p in art_zh["paragraphs"]),
                questions=tuple(questions),
            )
        )
    return articles


def assign(articles: list[Article]) -> dict[str, list[Article]]:
    """Articles per document: a seeded shuffle cut into the layouts' sizes."""
    order = list(articles)
    random.Random(SEED).shuffle(order)
    out, start = {}, 0
    for layout in LAYOUTS:
        out[layout.name] = sorted(order[start : start + layout.articles], key=lambda a: a.index)
        start += layout.articles
    assert start == len(articles), "every article in exactly one document"
    return out


class Built:
    """One document being written: its lines, and where each article paragraph landed."""

    def __init__(self, layout: Layout, articles: list[Article]) -> None:
        from bilingual_qa import language as lang

        self.layout = layout
        self.articles = articles
        self.convert = lambda s: lang.convert(s, layout.opencc)
        pairs = [(a.index, p, a.en[p], self.convert(a.zh[p])) for a in articles for p in range(len(a.en))]
        if layout.interleaved:
            lines = [(key, side, text) for (ai, p, en, zh) in pairs for key, side, text in
                     (((ai, p), "en", en), ((ai, p), "zh", zh))]  # fmt: skip
        else:
            lines = [((ai, p), "en", en) for ai, p, en, _ in pairs] + [
                ((ai, p), "zh", zh) for ai, p, _, zh in pairs
            ]
        self.text = "\n".join(text for _, _, text in lines) + "\n"
        self.ids = {(key, side): f"P{i}" for i, (key, side, _) in enumerate(lines, start=1)}
        self.lines = {f"P{i}": text for i, (_, _, text) in enumerate(lines, start=1)}

    def check_parse(self) -> None:
        """The project's parser must see exactly these paragraphs, in this order."""
        from bilingual_qa.document import split_paragraphs

        parsed = split_paragraphs(self.text)
        expected = list(self.lines.values())
        if parsed != expected:
            bad = next(i for i, (a, b) in enumerate(zip(parsed, expected, strict=False)) if a != b)
            raise SystemExit(f"{self.layout.name}: paragraph P{bad + 1} parses differently")


def _sentence_with(text: str, needle: str) -> str:
    """The sentence of ``text`` that holds ``needle`` (the whole text if none does)."""
    from bilingual_qa.document import split_sentences

    for sentence in split_sentences(text):
        if needle in sentence.text:
            return sentence.text
    return text


def answerable_case(built: Built, q: Question, script: str) -> dict:
    """One XQuAD question as a reference case in ``script``."""
    key = (q.article, q.paragraph)
    en_id, zh_id = built.ids[(key, "en")], built.ids[(key, "zh")]
    if script == "en":
        question, answer, preferred = q.en, q.en_answer, en_id
        facts = [[answer]]
        reference = _sentence_with(built.lines[en_id], answer)
    else:
        traditional = built.convert(q.zh_answer)
        question = q.zh if script == "zh-Hans" else built.convert(q.zh)
        answer = q.zh_answer if script == "zh-Hans" else traditional
        preferred = zh_id
        # A Taiwan-phrased document says 軟體 where the Simplified answer says 软件: both are right.
        facts = [sorted({answer, q.zh_answer, traditional})]
        reference = _sentence_with(built.lines[zh_id], traditional)
        if script == "zh-Hans":
            from bilingual_qa import language as lang

            reference = lang.to_script(reference, "zh-Hans")
    return {
        "id": f"{built.layout.name}-{q.id}-{script}",
        "question": question,
        "language": script,
        "gold": sorted([en_id, zh_id], key=lambda i: int(i[1:])),
        "preferred": preferred,
        "facts": facts,
        "reference": reference,
        "category": "fact",
        "answerable": True,
        "history": [],
    }


def unanswerable_case(case_id: str, question: str, script: str, category: str, reference: str) -> dict:
    """An unanswerable reference case."""
    return {
        "id": case_id,
        "question": question,
        "language": script,
        "gold": [],
        "preferred": None,
        "facts": [],
        "reference": reference,
        "category": category,
        "answerable": False,
        "history": [],
    }


REFUSALS = {
    "en": "The document does not say.",
    "zh-Hans": "文档中没有提到。",
    "zh-Hant": "文件中沒有提到。",
}

_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*(?![\d.,])")
_EN_NAME = re.compile(r"\b[A-Z][a-zA-Z&'’.-]+(?: (?:of |the |de |von )?[A-Z][a-zA-Z&'’.-]+)*")
_EN_NOT_NAMES = frozenset(
    "What Which Who Whom Whose When Where Why How In On At For By From The A An Is Are Was Were Did Does "
    "Do During After Before Along Besides According Other Along Since If To Of As Under Over Not Each "
    "Most Many Much Some Any This That These Those It Its Their There Between Than With Within Without "
    "Into About Approximately Roughly Despite Along".split()
)


def _swap_number(text: str, document_text: str, rng: random.Random) -> str | None:
    """``text`` with one of its numbers replaced by one the document never contains."""
    numbers = [m for m in _NUMBER.finditer(text)]
    for match in rng.sample(numbers, len(numbers)):
        digits = match.group().replace(",", "")
        if "." in digits or not digits.isdigit():
            continue
        value = int(digits)
        if 1000 <= value <= 2100:  # a year: a nearby year the document never mentions
            options = [value + d for d in (-13, -7, 9, 17, -21, 26) if value + d <= 2030]
        else:
            options = [value * 3 + 7, value + 11, value * 2 + 3, value + 4, value + 23]
        for option in options:
            candidate = str(option)
            if not re.search(rf"(?<!\d){candidate}(?!\d)", document_text.replace(",", "")):
                return text[: match.start()] + candidate + text[match.end() :]
    return None


def _english_names(text: str) -> list[str]:
    """Capitalized names in an English question (its first word and question words aside)."""
    names = []
    for match in _EN_NAME.finditer(text):
        words = match.group().split()
        while words and words[0] in _EN_NOT_NAMES:
            words = words[1:]
        name = " ".join(words).rstrip(".'’")
        if len(name) >= (2 if name.isupper() else 3):
            names.append(name)
    return names


def _chinese_names(text: str) -> list[tuple[str, str]]:
    """(word, tag) of person, place and organisation names in a Chinese question (jieba's tags)."""
    import jieba
    import jieba.posseg as pseg

    jieba.setLogLevel(60)
    return [(w.word, w.flag) for w in pseg.cut(text) if w.flag in ("nr", "ns", "nt") and len(w.word) >= 2]


def near_misses(built: Built, others: list[Article], rng: random.Random) -> list[dict]:
    """Near-miss questions: a question of this document with one detail swapped out of it."""
    document_text = built.text
    lowered = document_text.casefold()
    simplified_text = _to_simplified(document_text)
    other_en = sorted({n for a in others for q in a.questions for n in _english_names(q.en)})
    other_zh: dict[str, list[str]] = {}
    for a in others:
        for q in a.questions:
            for word, tag in _chinese_names(q.zh):
                other_zh.setdefault(tag, []).append(word)
    out = []
    questions = [q for a in built.articles for q in a.questions]
    rng.shuffle(questions)
    for i, q in enumerate(questions):
        if len(out) >= NEAR_MISS:
            break
        script = SCRIPTS[i % 3]
        source = q.en if script == "en" else q.zh
        swapped = _swap_number(source, document_text, rng)
        how = "number"
        if swapped is None and script == "en":
            names = [n for n in _english_names(source) if n.casefold() in lowered]
            replacements = [n for n in other_en if n.casefold() not in lowered and " " in n] or other_en
            if names and replacements:
                name = rng.choice(names)
                new = rng.choice([r for r in replacements if r.casefold() not in lowered] or [name])
                if new != name:
                    swapped, how = source.replace(name, new, 1), "entity"
        elif swapped is None:
            names = [(w, t) for w, t in _chinese_names(source) if w in simplified_text]
            if names:
                word, tag = rng.choice(names)
                pool = [w for w in other_zh.get(tag, []) if w not in simplified_text and w not in source]
                if pool:
                    swapped, how = source.replace(word, rng.choice(sorted(set(pool))), 1), "entity"
        if swapped is None:
            continue
        question = swapped if script != "zh-Hant" else built.convert(swapped)
        out.append(
            unanswerable_case(
                f"{built.layout.name}-nm-{q.id}-{how}-{script}",
                question,
                script,
                "near-miss",
                REFUSALS[script],
            )
        )
    return out


def _to_simplified(text: str) -> str:
    from bilingual_qa import language as lang

    return lang.to_simplified(text)


def out_of_document(built: Built, others: list[Article], rng: random.Random) -> list[dict]:
    """Questions of articles this document does not hold, a few from each, in rotating scripts."""
    pool = [q for a in others for q in a.questions]
    chosen = sorted(rng.sample(pool, OUT_OF_DOCUMENT), key=lambda q: (q.article, q.id))
    out = []
    for i, q in enumerate(chosen):
        script = SCRIPTS[i % 3]
        question = {"en": q.en, "zh-Hans": q.zh, "zh-Hant": built.convert(q.zh)}[script]
        out.append(
            unanswerable_case(
                f"{built.layout.name}-ood-{q.id}-{script}", question, script, "unanswerable", REFUSALS[script]
            )
        )
    return out


def hand_written(built: Built) -> list[dict]:
    """Hand-written cases for this document (conversations, other near-misses), if any."""
    path = HERE / f"{built.layout.name}.hand.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(source: Path, out: Path = HERE) -> None:
    """Write every document, reference set and sidecar into ``out``."""
    articles = load_articles(source)
    documents = assign(articles)
    for layout in LAYOUTS:
        mine = documents[layout.name]
        others = [a for a in articles if a not in mine]
        built = Built(layout, mine)
        built.check_parse()
        rng = random.Random(f"{SEED}-{layout.name}")
        cases = []
        for a in mine:
            for i, q in enumerate(a.questions):
                cases.append(answerable_case(built, q, SCRIPTS[(i + a.index) % 3]))
        cases += out_of_document(built, others, rng)
        cases += near_misses(built, others, rng)
        cases += hand_written(built)
        doc_path = out / f"{layout.name}.txt"
        doc_path.write_text(built.text, encoding="utf-8")
        set_path = out / f"{layout.name}.jsonl"
        set_path.write_text(
            "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8"
        )
        meta = {
            "document": doc_path.name,
            "sha256": hashlib.sha256(built.text.encode("utf-8")).hexdigest(),
            "path": doc_path.name,
            "development": True,
            "articles": [a.title for a in mine],
            "layout": "interleaved" if layout.interleaved else "blocks",
            "opencc": layout.opencc,
        }
        (out / f"{layout.name}.meta.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        kinds = Counter(f"{c['category']}/{c['language']}" for c in cases)
        print(
            f"{layout.name}: {len(built.lines)} paragraphs, {len(cases)} cases {dict(sorted(kinds.items()))}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the xquad-dev folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: beside this file)")
    args = parser.parse_args(argv)
    if not (args.source / "xquad-dev.en.json").exists():
        print(f"no xquad-dev at {args.source}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    build(args.source, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

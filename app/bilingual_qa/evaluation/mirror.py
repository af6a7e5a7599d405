"""Mirror: every Chinese question asked again in the other script, paired with the original.

A Simplified question about a Traditional document (or the reverse) should be answered as
well as the same question in the document's script. Comparing the zh-Hans and zh-Hant cells
of a set compares different questions; the mirror asks the *same* questions in both scripts,
so the gap it shows is the script's alone. The mirrored document (its Chinese written in the
other script) turns the direction around: the development documents are Traditional, so
Traditional questions about a Simplified document are asked there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import language as lang
from .metrics import CaseResult
from .reference import ReferenceSet

#: Marks a mirrored case's id: "<original id>~<script>".
SEPARATOR = "~"


def mirrored(reference: ReferenceSet) -> ReferenceSet:
    """The set's Chinese questions without history, each converted to the other script.

    Args:
        reference: a reference set.

    Returns:
        A set of the converted cases (ids "<id>~<script>", language the new script); its
        facts, gold paragraphs and reference answers are the originals'.
    """
    cases = []
    for case in reference.cases:
        if case.history or not lang.is_chinese(case.language):
            continue
        other = lang.HANS if case.language == lang.HANT else lang.HANT
        cases.append(
            dataclasses.replace(
                case,
                id=f"{case.id}{SEPARATOR}{other}",
                question=lang.to_script(case.question, other),
                language=other,
                full=None,
            )
        )
    return dataclasses.replace(reference, cases=tuple(cases))


def script_summary(
    original: Sequence[CaseResult], mirror: Sequence[CaseResult]
) -> dict[str, dict[str, float | int]]:
    """Fact recall and false refusals of the same answerable questions in each script.

    Args:
        original: the engine's scored cases (as written).
        mirror: the scored cases of :func:`mirrored` (pooled sets: ids are unique across them).

    Returns:
        {"zh-Hant": {...}, "zh-Hans": {...}}, each with "n", "facts" and "false_refusal" over
        the questions that were asked in both scripts; empty when there are none.
    """
    by_id = {c.id: c for c in original}
    asked: dict[str, list[CaseResult]] = {lang.HANT: [], lang.HANS: []}
    for case in mirror:
        first = by_id.get(case.id.rsplit(SEPARATOR, 1)[0])
        if first is None or not first.answerable or case.metrics.get("fact_recall") is None:
            continue
        asked[case.language].append(case)
        asked[first.language].append(first)
    out: dict[str, dict[str, float | int]] = {}
    for script, cases in asked.items():
        if cases:
            out[script] = {
                "n": len(cases),
                "facts": round(sum(c.metrics.get("fact_recall") or 0.0 for c in cases) / len(cases), 4),
                "false_refusal": round(sum(not c.answered for c in cases) / len(cases), 4),
            }
    return out


def other_script(document: Any) -> str:
    """The script the document's Chinese is not (mostly) written in."""
    return lang.HANS if document.chinese_script == lang.HANT else lang.HANT


def mirrored_document(document: Any, folder: str | Path) -> Path:
    """The document as a .txt file with its Chinese in the other script; paragraphs and ids kept.

    Args:
        document: a parsed document (its paragraphs are written one per block).
        folder: where the file is written (named by the document's sha256 and the script).

    Returns:
        The file's path.
    """
    other = other_script(document)
    text = "\n\n".join(
        lang.to_script(p.text, other) if lang.is_chinese(p.language) else p.text for p in document.paragraphs
    )
    path = Path(folder) / f"mirror-{document.sha256[:12]}-{other}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text + "\n":
        path.write_text(text + "\n", encoding="utf-8")
    return path


def both_scripts(reference: ReferenceSet) -> ReferenceSet:
    """The set's Chinese questions without history, as written and :func:`mirrored`."""
    mirror = mirrored(reference)
    firsts = {c.id.rsplit(SEPARATOR, 1)[0] for c in mirror.cases}
    cases = tuple(c for c in reference.cases if c.id in firsts) + mirror.cases
    return dataclasses.replace(reference, cases=cases)


def split(cases: Sequence[CaseResult]) -> tuple[list[CaseResult], list[CaseResult]]:
    """Scored cases of :func:`both_scripts`: (as written, mirrored)."""
    firsts = [c for c in cases if SEPARATOR not in c.id]
    return firsts, [c for c in cases if SEPARATOR in c.id]

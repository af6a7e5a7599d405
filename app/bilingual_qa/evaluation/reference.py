"""Reference sets: the case schema, the loader it drives, sidecars and discovery under eval/.

A reference set is a JSON Lines file, one case per line (eval/README.md describes
the fields). Its sidecar ``<set>.meta.json`` names the document it was written for;
its baseline ``<set>.baseline.json`` (eval/baseline.json for the default set) holds
the scores it is gated on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import language as lang
from ..errors import EvaluationError
from ..files import sha256_bytes

_CHECKOUT_EVAL = Path(__file__).resolve().parents[3] / "eval"
EVAL_DIR = _CHECKOUT_EVAL if _CHECKOUT_EVAL.is_dir() else Path("eval")
DEFAULT_SET = EVAL_DIR / "reference_qa.jsonl"
DEFAULT_BASELINE = EVAL_DIR / "baseline.json"

LANGUAGES = ("en", lang.HANT, lang.HANS)
_PARAGRAPH_ID = re.compile(r"P[1-9]\d*")

#: A rule: a check of a value, and the message when it fails (fixed, or made from the value).
Rule = tuple[Callable[[Any], bool], str | Callable[[Any], str]]


@dataclass(frozen=True)
class Field:
    """One key of a case or sidecar: its JSON type, the rules its value obeys, its parsed form."""

    kind: type | tuple[type, ...]
    rules: tuple[Rule, ...] = ()
    parse: Callable[[Any], Any] = lambda value: value
    required: bool = True

    def has_kind(self, value: object) -> bool:
        """Whether ``value`` has this field's JSON type (a bool is never a number or string)."""
        return isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))


def _nonblank(key: str) -> Rule:
    """The rule that a string is not empty or whitespace."""
    return (lambda value: bool(value.strip()), f"{key} is empty")


def _is_facts(facts: list) -> bool:
    """Whether ``facts`` is a list of non-empty lists of non-empty strings (each list: alternatives)."""
    return all(isinstance(f, list) and f and all(isinstance(a, str) and a.strip() for a in f) for f in facts)


def _is_history(history: list) -> bool:
    """Whether ``history`` is a list of {"question", "answer"} turns with non-empty questions."""
    return all(
        isinstance(h, dict)
        and set(h) == {"question", "answer"}
        and all(isinstance(v, str) for v in h.values())
        and h["question"].strip()
        for h in history
    )


#: The case schema, in the order keys are reported: each key's type, rules and parsed form.
CASE_SCHEMA: dict[str, Field] = {
    "id": Field(str, (_nonblank("id"),)),
    "question": Field(str, (_nonblank("question"),)),
    "language": Field(
        str,
        (
            (
                lambda v: v in LANGUAGES,
                lambda v: f"unknown language {v!r} (expected one of {', '.join(LANGUAGES)})",
            ),
        ),
    ),
    "gold": Field(
        list,
        (
            (
                lambda v: all(isinstance(g, str) and _PARAGRAPH_ID.fullmatch(g) for g in v),
                'gold must list paragraph ids like "P3"',
            ),
            (lambda v: len(set(v)) == len(v), "gold lists a paragraph twice"),
        ),
        tuple,
    ),
    "preferred": Field((str, type(None))),
    "facts": Field(
        list,
        ((_is_facts, "facts must be a list of non-empty lists of non-empty strings"),),
        lambda v: tuple(tuple(f) for f in v),
    ),
    "reference": Field(str, (_nonblank("reference"),)),
    "category": Field(str, (_nonblank("category"),)),
    "answerable": Field(bool),
    "history": Field(
        list,
        ((_is_history, 'history items must be {"question": str, "answer": str}'),),
        lambda v: tuple((h["question"], h["answer"]) for h in v),
    ),
    # On a follow-up: the id of the case (same set, no history) asking the same question in full.
    "full": Field(str, required=False),
}

#: Rules across keys of one case, checked once every key has passed its own.
CASE_RULES: tuple[Rule, ...] = (
    (lambda c: not c["answerable"] or bool(c["gold"]), "an answerable case needs gold paragraphs"),
    (
        lambda c: not c["answerable"] or c["preferred"] in c["gold"],
        lambda c: f"preferred {c['preferred']!r} is not in gold {c['gold']}",
    ),
    (
        lambda c: not c["answerable"] or bool(c["facts"]),
        "an answerable case needs at least one required fact",
    ),
    (
        lambda c: c["answerable"] or not (c["gold"] or c["preferred"] is not None or c["facts"]),
        "an unanswerable case has empty gold and facts and a null preferred",
    ),
    (
        lambda c: "full" not in c or bool(c["history"]),
        "full names the same question asked in full: only a case with history has one",
    ),
)

#: The sidecar schema: the document a set was written for, where it is, and whether the set
#: is development data (used to fit the answerer, so scored cross-validated).
SIDECAR_SCHEMA: dict[str, Field] = {
    "document": Field(str),
    "sha256": Field(str),
    "path": Field(str, required=False),
    "development": Field(bool, required=False),
}


@dataclass(frozen=True)
class Case:
    """One reference question: expected evidence, required facts and a reference answer."""

    id: str
    question: str
    language: str
    gold: tuple[str, ...]
    preferred: str | None
    facts: tuple[tuple[str, ...], ...]
    reference: str
    category: str
    answerable: bool
    history: tuple[tuple[str, str], ...]
    line: int
    full: str | None = None


@dataclass(frozen=True)
class ReferenceSet:
    """A parsed reference set and the document it was written for (from its sidecar)."""

    path: Path
    sha256: str
    cases: tuple[Case, ...]
    document_name: str | None = None
    document_sha256: str | None = None
    # From the sidecar: the document file (None: the embedded default) and whether the set is
    # development data (used to fit the answerer, so scored cross-validated).
    document_path: Path | None = None
    development: bool = False

    @property
    def name(self) -> str:
        """The set's name: its file name without ``.jsonl``."""
        return self.path.name.removesuffix(".jsonl")


def meta_path(path: str | Path) -> Path:
    """The sidecar naming a reference set's document.

    Args:
        path: the set's .jsonl file.

    Returns:
        ``<set>.meta.json`` beside it (which may not exist).
    """
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")


def baseline_path(set_path: str | Path) -> Path:
    """Where a set's baseline lives.

    Args:
        set_path: the set's .jsonl file.

    Returns:
        eval/baseline.json for the default set, else ``<set>.baseline.json`` beside it.
    """
    set_path = Path(set_path)
    if _same_file(set_path, DEFAULT_SET):
        return DEFAULT_BASELINE
    return set_path.with_name(set_path.name.removesuffix(".jsonl") + ".baseline.json")


def discover_sets(folder: str | Path = EVAL_DIR) -> list[Path]:
    """Every reference set under ``folder``: a ``.jsonl`` with a ``.meta.json`` sidecar, default first.

    Args:
        folder: searched recursively; sets under a ``reports`` folder are written copies, skipped.

    Returns:
        The sets' paths, sorted, the default set first when it is among them.
    """
    folder = Path(folder)
    found = sorted(
        p for p in folder.rglob("*.jsonl") if meta_path(p).exists() and "reports" not in p.parts[-3:-1]
    )
    return sorted(found, key=lambda p: not _same_file(p, DEFAULT_SET))


def load_reference_set(path: str | Path = DEFAULT_SET, document: object | None = None) -> ReferenceSet:
    """Read and schema-check a reference set (JSON Lines, one case per line).

    Args:
        path: the .jsonl file; blank lines are skipped.
        document: a :class:`~bilingual_qa.document.Document`; when given, the set's
            sidecar must name its sha256 and every gold/preferred id must exist in it.

    Returns:
        The :class:`ReferenceSet`.

    Raises:
        EvaluationError: unreadable file, a malformed case (message starts with
            ``path:line:``), duplicate ids, an empty set, or a set for another document.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise EvaluationError(f"cannot read reference set {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not UTF-8 text") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        case = _parse_case(line, number, f"{path}:{number}")
        if case.id in seen:
            raise EvaluationError(
                f"{path}:{number}: duplicate id {case.id!r} (first on line {seen[case.id]})"
            )
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise EvaluationError(f"{path}: the reference set is empty")
    by_id = {c.id: c for c in cases}
    for case in cases:
        if case.full is not None and (case.full not in by_id or by_id[case.full].history):
            raise EvaluationError(
                f"{path}:{case.line}: full {case.full!r} is not a case without history in this set"
            )
    meta = _read_meta(path)
    reference = ReferenceSet(
        path=path,
        sha256=sha256_bytes(raw),
        cases=tuple(cases),
        document_name=meta.get("document"),
        document_sha256=meta.get("sha256"),
        document_path=(path.parent / meta["path"]) if meta.get("path") else None,
        development=bool(meta.get("development", False)),
    )
    if document is not None:
        check_reference_set(reference, document)
    return reference


def check_reference_set(reference: ReferenceSet, document: Any) -> None:
    """Check a reference set against the document it will be run on.

    Args:
        reference: a loaded set.
        document: the :class:`~bilingual_qa.document.Document` it is to be run on.

    Raises:
        EvaluationError: no sidecar, a sidecar for another document, or ids the document lacks.
    """
    sidecar = meta_path(reference.path)
    if reference.document_sha256 is None:
        hint = json.dumps({"document": document.name, "sha256": document.sha256})
        raise EvaluationError(f"{sidecar} is missing: write {hint} there if the set is for this document")
    if reference.document_sha256 != document.sha256:
        raise EvaluationError(
            f"{reference.path} was written for another document ({reference.document_name}, sha256 "
            f"{reference.document_sha256[:12]}…), not {document.name} (sha256 {document.sha256[:12]}…)"
        )
    ids = {p.id for p in document.paragraphs}
    for case in reference.cases:
        unknown = [g for g in case.gold if g not in ids]
        if unknown:
            raise EvaluationError(
                f"{reference.path}:{case.line}: case {case.id}: paragraph {unknown[0]} is not in "
                f"{document.name} (P1..P{len(ids)})"
            )


def _parse_case(line: str, number: int, where: str) -> Case:
    """One JSONL line as a :class:`Case`, or an EvaluationError naming ``where`` (path:line)."""
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise EvaluationError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise EvaluationError(f"{where}: a case must be a JSON object, not {type(row).__name__}")
    missing = [k for k, f in CASE_SCHEMA.items() if f.required and k not in row]
    extra = sorted(set(row) - set(CASE_SCHEMA))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise EvaluationError(f"{where}: keys: {'; '.join(parts)}")
    present = {k: f for k, f in CASE_SCHEMA.items() if k in row}
    for key, field in present.items():
        if not field.has_kind(row[key]):
            raise EvaluationError(f"{where}: {key} has the wrong type ({type(row[key]).__name__})")
    checks = [(rule, row[key]) for key, field in present.items() for rule in field.rules]
    for (holds, message), value in [*checks, *((rule, row) for rule in CASE_RULES)]:
        if not holds(value):
            raise EvaluationError(f"{where}: {message if isinstance(message, str) else message(value)}")
    parsed = {key: field.parse(row[key]) for key, field in present.items()}
    return Case(**parsed, line=number)


def _read_meta(path: Path) -> dict[str, Any]:
    """The sidecar's fields (see SIDECAR_SCHEMA); empty when there is none."""
    sidecar = meta_path(path)
    if not sidecar.exists():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read {sidecar}: {exc}") from None
    required = {k: f for k, f in SIDECAR_SCHEMA.items() if f.required}
    if not isinstance(meta, dict) or not all(f.has_kind(meta.get(k)) for k, f in required.items()):
        raise EvaluationError(f'{sidecar}: expected {{"document": NAME, "sha256": HEX}}')
    optional = {k: f for k, f in SIDECAR_SCHEMA.items() if not f.required and k in meta}
    if not all(f.has_kind(meta[k]) for k, f in optional.items()):
        raise EvaluationError(f'{sidecar}: "path" must be a file name and "development" true or false')
    return meta


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (either may not exist)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False

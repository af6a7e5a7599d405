"""Re-indexing an edited document (``bilingual-qa bench``): only what changed is encoded.

A 510-paragraph document (30 numbered copies of the default one) is indexed, one paragraph is
edited, and the document is opened again. Passage vectors are replayed
(:class:`~bilingual_qa.bench.scenarios.ReplayEmbedder`) so the first build costs no model
time; the edited paragraph's real encoding is measured on its own, with the real model.

Target: the re-index ≤ 2 s + that paragraph's encoding (it must not re-encode the rest, and
everything else a build does — parsing, language detection, alignment, FAISS, saving — must
stay small).
"""

from __future__ import annotations

import time
from pathlib import Path

COPIES = 30
QUICK_COPIES = 6
EDIT = " Chongqing will also open a new rail line to Laos in 2025."


def reindex(ctx: object) -> None:
    """The stage: first build, re-index after one edited paragraph, that paragraph's encoding."""
    from ..assistant import Assistant
    from ..embedding import load_embedder
    from .scenarios import ReplayEmbedder, synthetic_text

    settings = ctx.settings.replace(index_dir=Path(ctx.work) / "reindex")  # type: ignore[attr-defined]
    embedder = load_embedder(settings)
    base = Assistant(settings=settings, embedder=embedder)
    replay = ReplayEmbedder(embedder, base.index)
    text, _ = synthetic_text(base.document, QUICK_COPIES if ctx.quick else COPIES)  # type: ignore[attr-defined]
    path = Path(ctx.work) / "edited-report.txt"  # type: ignore[attr-defined]
    path.write_text(text, encoding="utf-8")
    Assistant(document=path, settings=settings, embedder=replay)
    lines = text.splitlines()
    rebuilds, encodes = [], []
    for round_ in range(1 if ctx.quick else 3):  # type: ignore[attr-defined]
        row = len(lines) // 2 + round_
        lines[row] += EDIT
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        t = time.perf_counter()
        edited = Assistant(document=path, settings=settings, embedder=replay)
        rebuilds.append(time.perf_counter() - t)
        paragraph = edited.document.paragraphs[row]  # one paragraph per line
        texts = [paragraph.text + f" ({round_})"] + [f"{s.text} ({round_})" for s in paragraph.sentences]
        t = time.perf_counter()
        embedder.embed_passages(texts)  # the real model's cost of that paragraph (made distinct)
        encodes.append(time.perf_counter() - t)
    size = f"{len(edited.document.paragraphs)}-paragraph document"
    label = f"re-index after editing one paragraph ({size}), encoding excluded"
    rebuild = ctx.add("reindex_one_edit", label, "s", rebuilds)  # type: ignore[attr-defined]
    encode = ctx.add("reindex_paragraph_encoding", "that paragraph's encoding", "s", encodes)  # type: ignore[attr-defined]
    ctx.target(  # type: ignore[attr-defined]
        "reindex_one_edit",
        f"re-index after one edited paragraph ({size}) ≤ 2 s + its encoding",
        rebuild.median,  # replayed vectors: the edited paragraph's encoding is not in it
        2.0,
        f"re-index {rebuild.median:.2f} s without encoding; the paragraph's encoding {encode.median:.2f} s",
    )

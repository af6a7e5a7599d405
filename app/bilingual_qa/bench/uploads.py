"""Server memory under repeated uploads (``bilingual-qa bench``).

In a fresh process, the web page's handlers (:class:`bilingual_qa.web.ChatPage`, as
``bilingual-qa serve`` runs them, without the HTTP layer) take 20 tab sessions that each
upload the same 5,000-paragraph file; the process's resident memory is read after the
first upload, after the twentieth, and after the sessions are dropped (what Gradio does
when a tab's state expires). Passage vectors are replayed
(:class:`~bilingual_qa.bench.scenarios.ReplayEmbedder`): the memory is the real index's,
without minutes of encoding.

Targets: after 20 sessions ≤ the one-session figure + the cache budget
(``upload_cache_mb``); after they expire, back to the one-session figure (+5 %).
"""

from __future__ import annotations

import json
import sys

from .processes import run

SESSIONS = 20
#: Copies of the 17-paragraph default document: 5,015 paragraphs.
COPIES = 295
QUICK_COPIES = 60

#: The child: argv = copies, sessions. Prints the RSS (MB) at each step as JSON.
CHILD = (
    sys.executable,
    "-c",
    """\
import gc, json, shutil, sys, tempfile
from pathlib import Path
from bilingual_qa import Assistant
from bilingual_qa.bench.scenarios import ReplayEmbedder, synthetic_text
from bilingual_qa.web import ChatPage
from bilingual_qa.webpage import Session

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

copies, sessions = int(sys.argv[1]), int(sys.argv[2])
bot = Assistant()
text, _ = synthetic_text(bot.document, copies)
# A 5,000-paragraph file is megabytes: over the page's default upload limit, which a
# server may raise (ChatPage's max_upload_bytes); memory per upload is what is measured.
page = ChatPage(
    Assistant(settings=bot.settings, embedder=ReplayEmbedder(bot.embedder, bot.index)),
    max_upload_bytes=len(text.encode()) + 1,
)
work = Path(tempfile.mkdtemp())
out = {"start": rss()}
tabs = []
for i in range(sessions):
    upload = work / f"{i}" / "report.txt"  # a fresh copy each time: the page deletes what it took
    upload.parent.mkdir()
    upload.write_text(text, encoding="utf-8")
    chat, session, *_ = page.load_document(str(upload), Session())
    if session.upload is None:
        raise SystemExit(f"upload {i} failed: {chat[-1]}")
    tabs.append(session)
    page.settle()  # the sentences, encoded behind the page after it said ready, count too
    if i == 0:
        gc.collect()
        out["one"] = rss()
gc.collect()
out["all"] = rss()
out["paragraphs"] = len(page._engine(tabs[0]).document.paragraphs)
tabs.clear()
gc.collect()
out["expired"] = rss()
out["budget_mb"] = bot.settings.upload_cache_mb
shutil.rmtree(work, ignore_errors=True)
print(json.dumps(out))
""",
)


def upload_memory(ctx: object) -> None:
    """The stage: RSS after 1 and 20 upload sessions of one file, and after they expire."""
    copies = QUICK_COPIES if ctx.quick else COPIES  # type: ignore[attr-defined]
    _, _, out = run([*CHILD, str(copies), str(SESSIONS)], ctx.env)  # type: ignore[attr-defined]
    rss = json.loads(out.strip().splitlines()[-1])
    size = f"{rss['paragraphs']:,}-paragraph upload"
    ctx.add("upload_rss_one", f"server RSS after 1 session uploading a {size}", "MB", [rss["one"]])  # type: ignore[attr-defined]
    ctx.add("upload_rss_all", f"server RSS after {SESSIONS} sessions uploading it", "MB", [rss["all"]])  # type: ignore[attr-defined]
    ctx.add("upload_rss_expired", "server RSS after those sessions expired", "MB", [rss["expired"]])  # type: ignore[attr-defined]
    note = f"start {rss['start']:.0f} MB, one {rss['one']:.0f} MB, all {rss['all']:.0f} MB"
    ctx.target(  # type: ignore[attr-defined]
        "upload_rss",
        f"{SESSIONS} upload sessions: RSS ≤ one session's + upload_cache_mb ({rss['budget_mb']} MB)",
        rss["all"] - rss["one"],
        float(rss["budget_mb"]),
        note,
    )
    ctx.target(  # type: ignore[attr-defined]
        "upload_rss_expired",
        "after the sessions expire: RSS ≤ one session's + 5 %",
        rss["expired"] / rss["one"],
        1.05,
        f"expired {rss['expired']:.0f} MB vs one session {rss['one']:.0f} MB",
    )

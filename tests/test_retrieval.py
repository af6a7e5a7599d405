import numpy as np

from bilingual_qa.document import read_document
from bilingual_qa.index import build_index
from bilingual_qa.retrieval import Retriever


def _retriever(fake_embedder):
    return Retriever(build_index(read_document(), fake_embedder))


def test_every_paragraph_is_in_exactly_one_unit_with_its_twin(fake_embedder):
    r = _retriever(fake_embedder)
    paragraphs = r.index.document.paragraphs
    seen = [i for unit in r.units for i in unit]
    assert sorted(seen) == list(range(len(paragraphs)))
    for unit in r.units:
        if len(unit) == 2:
            a, b = (paragraphs[i] for i in unit)
            assert a.twin_id == b.id and b.twin_id == a.id


def test_hits_bring_their_twin_and_are_ranked(fake_embedder):
    r = _retriever(fake_embedder)
    q = "Which sister cities in Thailand and Cambodia?"
    result = r.search(q, fake_embedder.embed_queries([q])[0], 4)
    assert result.question == q
    hits = result.hits
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    ids = {r.index.document.paragraphs[i].id for i in hits[0].members}
    assert ids == {"P9", "P10"} or "P9" in ids


def test_simplified_query_matches_traditional_text_lexically(fake_embedder):
    r = _retriever(fake_embedder)
    simplified = r.lexical_scores("胡志明市 国际友城")
    traditional = r.lexical_scores("胡志明市 國際友城")
    assert (simplified == traditional).all()
    best = int(simplified.argmax())
    assert r.index.document.paragraphs[best].id == "P10"


def test_question_with_no_known_tokens_scores_zero(fake_embedder):
    r = _retriever(fake_embedder)
    assert not r.lexical_scores("xyzzy plugh").any()


def test_a_credit_line_is_found_by_what_it_credits_in_either_language(fake_embedder):
    r = _retriever(fake_embedder)
    ids = [p.id for p in r.index.document.paragraphs]
    for question, line in [
        ("英文版的譯者是誰?", "P15"),  # Translation/Xiong Lingsong and Niu Kexin
        ("中文稿件来自哪家媒体?", "P17"),  # 文/華龍網
        ("Who translated the article?", "P15"),
    ]:
        scores = r.lexical_scores(question)
        assert ids[int(scores.argmax())] == line, question


def test_a_sentence_not_encoded_yet_scores_as_its_paragraph(fake_embedder):
    from bilingual_qa.index import Build

    doc = read_document()
    whole = Retriever(build_index(doc, fake_embedder))
    build = Build(doc, fake_embedder)
    partial = Retriever(build.index)
    query = fake_embedder.embed_queries(["sister cities in Thailand"])[0]
    pending = build.index.pending
    scores = partial.sentence_scores(query)
    paragraph = build.index.paragraph_vectors @ query
    np.testing.assert_allclose(scores[pending], paragraph[build.index.sentence_paragraph[pending]], rtol=1e-6)
    np.testing.assert_allclose(scores[~pending], whole.sentence_scores(query)[~pending], rtol=1e-6)
    # A stand-in never lifts a unit: each unit's dense score is at most the finished index's.
    units = len(doc.units)
    finished = {h.members: h.dense for h in whole.search("Thailand", query, units).hits}
    found = {h.members: h.dense for h in partial.search("Thailand", query, units).hits}
    assert found.keys() == finished.keys()
    assert all(found[m] <= finished[m] + 1e-6 for m in found)
    assert any(found[m] < finished[m] - 1e-6 for m in found)  # and some are lower until filled

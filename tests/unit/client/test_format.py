"""`format_items`: the table the CLI prints for a response."""

from __future__ import annotations

from lmrec.client import format_items
from lmrec.v1 import recommender_pb2 as pb


def _response(degraded: bool = False) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        bundle_version="3",
        degraded=degraded,
        items=[
            pb.RecommendedItem(item_id="i42", title="The Silent Clue", score=0.91, found_by="lm",
                               signals=[pb.SignalScore(signal="lm", score=0.5),
                                        pb.SignalScore(signal="als", score=0.41)]),
            pb.RecommendedItem(item_id="i7", title="A" * 60, score=0.3, found_by="popular",
                               signals=[pb.SignalScore(signal="popular", score=0.1)]),
        ],
    )


def test_table_has_ids_titles_scores_and_found_by():
    text = format_items(_response())
    lines = text.splitlines()
    assert lines[0] == "bundle 3"
    assert len(lines) == 2 + 2  # title, header, one line per item
    first, second = lines[2], lines[3]
    assert first.split()[0] == "1" and "i42" in first and "The Silent Clue" in first
    assert "0.910" in first and " lm " in first and "lm=0.50 als=0.41" in first
    assert second.split()[0] == "2" and "i7" in second and "popular" in second and "popular=0.10" in second
    # Long titles are shortened so the columns stay aligned.
    assert "A" * 43 + "..." in second and "A" * 47 not in second
    assert "DEGRADED" not in text


def test_degraded_is_flagged_without_blaming_the_encoder_when_it_may_have_been_the_ranker():
    first = format_items(_response(degraded=True)).splitlines()[0]
    assert first == ("bundle 3  (DEGRADED: a served model was unavailable: the text encoder, or the ranker with a "
                     "fused bundle; the answer comes from the fallback)")


def test_similar_items_response_has_no_degraded_field():
    response = pb.SimilarItemsResponse(bundle_version="1", items=[pb.RecommendedItem(item_id="i1", title="T")])
    text = format_items(response)
    assert text.splitlines()[0] == "bundle 1" and "i1" in text


def test_empty_response():
    assert len(format_items(pb.RecommendResponse(bundle_version="1")).splitlines()) == 2


def test_status_reads_as_lines_with_the_deployable_versions_and_whether_it_degraded():
    from lmrec.client import format_status

    text = format_status(pb.StatusResponse(bundle_version="2", available_versions=[1, 2], n_items=1682,
                                           added_items=3, recorded_events=12_345, cache_hit_ratio=0.875))
    assert text.splitlines() == ["bundle           2 (deployable: 1, 2)", "catalogue        1,682 items (3 added)",
                                 "recorded events  12,345", "cache hit ratio  0.88", "degraded         no"]
    assert "degraded         yes: a breaker is open" in format_status(pb.StatusResponse(bundle_version="1",
                                                                                       degraded=True))

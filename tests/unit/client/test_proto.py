"""The committed gRPC stubs (lmrec/v1/recommender_pb2*.py) are what the .proto generates today."""

from __future__ import annotations

from pathlib import Path

from lmrec.client.proto.generate import REPO_ROOT, generate

COMMITTED = REPO_ROOT / "lmrec" / "v1"
EXPECTED = {"recommender_pb2.py", "recommender_pb2.pyi", "recommender_pb2_grpc.py"}


def test_generated_stubs_are_up_to_date(tmp_path: Path):
    generated = generate(tmp_path)
    assert {p.name for p in generated} == EXPECTED
    for path in generated:
        committed = COMMITTED / path.name
        assert committed.is_file(), f"{committed} is missing; run `python client/proto/generate.py`"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed} is stale; run `python client/proto/generate.py` and commit the result")


def test_committed_stubs_import_and_describe_the_service():
    from lmrec.v1 import recommender_pb2, recommender_pb2_grpc

    service = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]
    assert sorted(m.name for m in service.methods) == ["AddItems", "ForgetUser", "GetUserProfile", "Recommend",
                                                       "RecordEvent", "RecordEvents", "SimilarItems"]
    admin = recommender_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert sorted(m.name for m in admin.methods) == ["Deploy", "GetStatus"]
    assert hasattr(recommender_pb2_grpc, "RecommenderStub") and hasattr(recommender_pb2_grpc, "AdminStub")
    # Additive only: the version-1 fields keep their numbers, so old clients still work.
    fields = {f.name: f.number for f in recommender_pb2.RecommendRequest.DESCRIPTOR.fields}
    assert {k: fields[k] for k in ("user_id", "recent_item_ids", "text", "k", "include_seen")} == {
        "user_id": 1, "recent_item_ids": 2, "text": 3, "k": 4, "include_seen": 5}
    request = recommender_pb2.SimilarItemsRequest(item_id="i1", k=3)
    assert request.WhichOneof("query") == "item_id"

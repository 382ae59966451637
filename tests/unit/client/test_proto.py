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
    assert sorted(m.name for m in service.methods) == ["Recommend", "SimilarItems"]
    assert hasattr(recommender_pb2_grpc, "RecommenderStub")
    request = recommender_pb2.SimilarItemsRequest(item_id="i1", k=3)
    assert request.WhichOneof("query") == "item_id"

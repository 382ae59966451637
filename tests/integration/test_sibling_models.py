"""A version built with another Triton config lives in a sibling model (see export/repository.py): the real
Triton starts with the served bundle's models only, and deploys move between the two models both ways."""

from __future__ import annotations

import pytest

from lmrec.client import RecommenderClient
from lmrec.export.build import BuildConfig, build_bundle
from lmrec.export.loaders import DataConfig
from lmrec.export.repository import REPOSITORY_DIR
from lmrec.export.triton_config import TextEncoderSpec
from lmrec.server.serve import ServeConfig, _triton_config
from lmrec.server.triton_launcher import TritonProcess, free_port

from .conftest import LMREC, TINY, ManagedProcess, wait_for_health

pytestmark = pytest.mark.integration


def test_a_version_with_another_config_is_served_from_its_sibling_model_and_deploys_cross_over(tmp_path):
    data = DataConfig(dataset="synthetic", synthetic=TINY)
    quiet = lambda *_: None  # noqa: E731
    first = build_bundle(BuildConfig(data=data, output_dir=tmp_path), progress=quiet)
    # Another max_batch_size is another config.pbtxt: what a `--device cuda` build is on a CPU-only machine.
    second = build_bundle(BuildConfig(data=data, output_dir=tmp_path, encoder_spec=TextEncoderSpec(max_batch_size=32)),
                          progress=quiet)
    first_model = first.manifest["encoder"]["triton_model"]
    sibling = second.manifest["encoder"]["triton_model"]
    assert first_model == "text_encoder" and sibling.startswith("text_encoder_")
    assert "max_batch_size: 64" in (tmp_path / REPOSITORY_DIR / "text_encoder" / "config.pbtxt").read_text()

    triton_config = _triton_config(ServeConfig(build_dir=tmp_path))  # the latest bundle: 2
    assert triton_config.models == (sibling,)
    with TritonProcess(triton_config) as triton:
        port = free_port()
        gateway = ManagedProcess([LMREC, "gateway", "--build-dir", str(tmp_path), "--triton-url", triton.grpc_url,
                                  "--port", str(port), "--state-dir", str(tmp_path / "state")],
                                 tmp_path / "gateway.log")
        try:
            address = f"127.0.0.1:{port}"
            wait_for_health(address, gateway)
            with RecommenderClient(address, timeout_s=300) as client:
                assert client.recommend("u1", k=5).bundle_version == "2"
                assert client.similar(text="a space adventure", k=3).items
                deployed = client.deploy(1)  # loads text_encoder, which Triton did not start with
                assert (deployed.bundle_version, deployed.previous_version) == ("1", "2")
                answer = client.recommend("u1", k=5)
                assert answer.bundle_version == "1" and not answer.degraded and len(answer.items) == 5
                assert client.deploy(2).bundle_version == "2"
                answer = client.recommend("u1", k=5)
                assert answer.bundle_version == "2" and not answer.degraded
        finally:
            gateway.stop()


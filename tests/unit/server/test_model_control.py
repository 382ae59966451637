"""The Triton load override: the repository config with only the version policy changed."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from lmrec.server.model_control import config_with_versions

GOLDEN = Path(__file__).resolve().parents[3] / "model_repository"


def test_override_serves_exactly_the_given_versions_and_keeps_everything_else():
    for model in ("text_encoder", "ranker"):
        path = GOLDEN / model / "config.pbtxt"
        override = json.loads(config_with_versions(path, {3, 1}))
        assert [int(v) for v in override["version_policy"]["specific"]["versions"]] == [1, 3]
        assert "latest" not in override["version_policy"]
        parsed = json_format.Parse(json.dumps(override), mc.ModelConfig())
        original = text_format.Parse(path.read_text(), mc.ModelConfig())
        parsed.ClearField("version_policy")
        original.ClearField("version_policy")
        assert parsed == original

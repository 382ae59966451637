"""Which versions of each model Triton serves, driven by the gateway (Triton runs in explicit mode).

`serve_versions(model, {1, 2})` reloads the model with its repository `config.pbtxt`, overriding only
the version policy. Triton loads the new versions before it drops the old ones, so a version that
stays in the set keeps answering throughout.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc


class ModelControlError(RuntimeError):
    """Triton refused or failed a load; the message carries Triton's reason."""


class TritonUnreachable(ModelControlError):
    """No Triton answers at the address (the CLI names the option that gave it)."""


def config_with_versions(config_path: Path, versions: set[int]) -> str:
    """The model's config.pbtxt as Triton's JSON load override, serving exactly `versions`."""
    config = text_format.Parse(Path(config_path).read_text(), mc.ModelConfig())
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(versions))
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


class TritonModelControl:
    def __init__(self, url: str, repository: Path) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._client = grpcclient.InferenceServerClient(url)
        self.repository = Path(repository)

    async def serve_versions(self, model: str, versions: set[int], *, timeout_s: float = 300.0) -> None:
        override = config_with_versions(self.repository / model / "config.pbtxt", versions)
        try:
            await self._client.load_model(model, config=override, client_timeout=timeout_s)
        except Exception as error:  # InferenceServerException carries Triton's message
            raise ModelControlError(f"Triton could not load {model} versions {sorted(versions)}: {error}") from error
        for version in versions:
            if not await self.is_ready(model, version):
                raise ModelControlError(f"Triton loaded {model} but version {version} is not ready")

    async def unload(self, model: str) -> None:
        try:
            await self._client.unload_model(model)
        except Exception as error:
            raise ModelControlError(f"Triton could not unload {model}: {error}") from error

    async def is_live(self) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=2.0))
        except Exception:
            return False

    async def is_ready(self, model: str, version: int) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, str(version), client_timeout=5.0))
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()

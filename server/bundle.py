"""A bundle: the versions that serve a request together (encoder, the index built with it, CF factors).

`load_bundle(build_dir, version)` verifies every checksum in the manifest (and that the index was built
with this very encoder) before anything serves from it; a half-written or tampered bundle is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.export.build import CF_FILE, FUSED_FILE
from lmrec.export.encoder_export import sha256_of
from lmrec.export.index_build import INDEX_FILE
from lmrec.export.models.lm import text_builder_fingerprint
from lmrec.export.repository import BUNDLES_DIR, MANIFEST_FILE, REPOSITORY_DIR
from lmrec.export.snapshot import load_snapshot

from .retrieval import Retriever, make_retriever

log = logging.getLogger(__name__)


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or inconsistent; the message names the file and the problem."""


@dataclass(frozen=True, kw_only=True)
class Bundle:
    version: int
    manifest: dict
    dataset: object  # lmrec.export.dataset.Dataset
    item_index: dict[str, int]
    item_embeddings: np.ndarray
    retriever: Retriever
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray
    als_regularization: float
    als_alpha: float
    encoder_model: str
    encoder_version: int
    fused: object | None = None  # lmrec.export.models.fused.FusedRecommender when the bundle has a ranker
    ranker_model: str | None = None
    ranker_version: int | None = None

    @property
    def label(self) -> str:
        return str(self.version)

    @property
    def encoder_max_batch_size(self) -> int | None:
        """Texts per request the served encoder model takes (None in manifests written before it was recorded:
        the client's default, the spec's default then)."""
        value = self.manifest["encoder"].get("max_batch_size")
        return int(value) if value else None

    def fold_in_user(self, item_indices: np.ndarray) -> np.ndarray:
        """ALS user vector for a history it was not trained on: the exact implicit-ALS user step
        x = (YᵀY + α·Y_hᵀY_h + λI)⁻¹ (1+α)·Σ_h y_h, with confidence 1+α on every history item."""
        if len(item_indices) == 0:
            return np.zeros(self.item_factors.shape[1], np.float32)
        factors = self.item_factors[np.unique(item_indices)]
        gram = (self._item_gram + self.als_alpha * (factors.T @ factors)
                + self.als_regularization * np.eye(factors.shape[1], dtype=np.float32))
        return np.linalg.solve(gram, (1.0 + self.als_alpha) * factors.sum(axis=0)).astype(np.float32)

    @property
    def _item_gram(self) -> np.ndarray:
        gram = self.__dict__.get("_gram")
        if gram is None:
            gram = self.item_factors.T @ self.item_factors
            object.__setattr__(self, "_gram", gram)
        return gram


def complete_versions(build_dir: Path) -> list[int]:
    folder = Path(build_dir) / BUNDLES_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST_FILE).is_file())


def bundle_model_names(build_dir: Path, version: int | None = None) -> tuple[str, ...]:
    """The Triton models bundle `version` (the latest complete one when None) calls, from its manifest;
    () when there is no such bundle or its manifest cannot be read (the gateway then says why)."""
    versions = complete_versions(build_dir)
    version = versions[-1] if version is None and versions else version
    if version not in versions:
        return ()
    try:
        manifest = json.loads((Path(build_dir) / BUNDLES_DIR / str(version) / MANIFEST_FILE).read_text())
        parts = [manifest["encoder"]] + ([manifest["ranker"]] if manifest.get("ranker") else [])
        return tuple(dict.fromkeys(str(part["triton_model"]) for part in parts))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()


def verify_bundle(build_dir: Path, version: int) -> dict:
    bundle_dir = Path(build_dir) / BUNDLES_DIR / str(version)
    manifest_path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        available = ", ".join(map(str, complete_versions(build_dir))) or "none"
        raise BundleError(f"bundle {version} does not exist in {bundle_dir.parent} (complete bundles: {available})")
    if not manifest_path.is_file():
        raise BundleError(f"bundle {version}: {manifest_path} is missing (incomplete build?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"bundle {version}: {manifest_path} is not valid JSON ({error})") from None
    try:
        _verify_files(build_dir, bundle_dir, version, manifest)
    except (KeyError, TypeError, AttributeError) as error:  # valid JSON, but not the manifest's shape
        raise BundleError(f"bundle {version}: {manifest_path} is not a bundle manifest (bad or missing field: "
                          f"{error!r})") from None
    return manifest


def _verify_files(build_dir: Path, bundle_dir: Path, version: int, manifest: dict) -> None:
    """Every file the manifest lists matches its checksum, and the index belongs to the named encoder."""
    for name, checksum in manifest.get("files", {}).items():
        path = bundle_dir / name
        if not path.is_file() or sha256_of(path) != checksum:
            raise BundleError(f"bundle {version}: {path} is missing or does not match its manifest checksum")
    encoder = manifest["encoder"]
    encoder_dir = Path(build_dir) / REPOSITORY_DIR / encoder["triton_model"] / str(encoder["triton_version"])
    for name, checksum in encoder["checksums"].items():
        path = encoder_dir / name
        if not path.is_file() or sha256_of(path) != checksum:
            raise BundleError(f"bundle {version}: encoder file {path} is missing or does not match the manifest")
    ranker = manifest.get("ranker")
    if ranker:
        ranker_dir = Path(build_dir) / REPOSITORY_DIR / ranker["triton_model"] / str(ranker["triton_version"])
        for name, checksum in ranker["checksums"].items():
            path = ranker_dir / name
            if not path.is_file() or sha256_of(path) != checksum:
                raise BundleError(f"bundle {version}: ranker file {path} is missing or does not match the manifest")
    if manifest["index"]["encoder_checksum"] != encoder["checksums"][encoder["onnx_file"]]:
        raise BundleError(f"bundle {version}: the index was built with another encoder than the one it names")


def _say_if_texts_differ(version: int, built_with: str | None) -> None:
    """A bundle's encoder, item embeddings and ranker learnt from the texts of the builders it was built with;
    served with other builders, its profiles read differently than in training. It still serves: say so."""
    if built_with == text_builder_fingerprint():
        return
    when = "with other text builders" if built_with else "before bundles recorded their text builders"
    log.warning("bundle %s was built %s: this gateway writes profile and item texts differently, so the "
                "encoder and ranker see texts unlike those they learnt from; rebuild it (`lmrec build`) for "
                "the quality it was measured at", version, when)


def load_bundle(build_dir: Path, version: int | None = None, *, retriever: str = "hnsw") -> Bundle:
    build_dir = Path(build_dir)
    if version is None:
        versions = complete_versions(build_dir)
        if not versions:
            raise BundleError(f"no complete bundle under {build_dir / BUNDLES_DIR} (run `lmrec build` first)")
        version = versions[-1]
    manifest = verify_bundle(build_dir, version)
    _say_if_texts_differ(version, manifest.get("text_builder"))
    bundle_dir = build_dir / BUNDLES_DIR / str(version)
    dataset = load_snapshot(bundle_dir)
    embeddings = np.load(bundle_dir / "item_embeddings.npy")
    cf = np.load(bundle_dir / CF_FILE)
    fused = None
    ranker = manifest.get("ranker")
    if ranker:
        import pickle

        with open(bundle_dir / FUSED_FILE, "rb") as handle:
            fused = pickle.load(handle)  # checksum-verified above: written by this project's build
    return Bundle(
        version=version,
        manifest=manifest,
        dataset=dataset,
        item_index=dataset.item_index(),
        item_embeddings=embeddings,
        retriever=make_retriever(retriever, embeddings=embeddings, index_path=bundle_dir / INDEX_FILE,
                                 ef_search=manifest["index"]["ef_search"]),
        user_factors=cf["user_factors"],
        item_factors=cf["item_factors"],
        popularity=cf["popularity"],
        als_regularization=float(cf["regularization"]),
        als_alpha=float(cf["alpha"]),
        encoder_model=manifest["encoder"]["triton_model"],
        encoder_version=int(manifest["encoder"]["triton_version"]),
        fused=fused,
        ranker_model=ranker["triton_model"] if ranker else None,
        ranker_version=int(ranker["triton_version"]) if ranker else None,
    )

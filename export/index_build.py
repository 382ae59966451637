"""Build the hnswlib retrieval index over item embeddings, saved with its id map and encoder identity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "items.hnsw"
INDEX_META_FILE = "index.json"


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    seed: int = 42
    threads: int = 2


def build_index(embeddings: np.ndarray, item_ids: list[str], directory: Path, *, encoder_checksum: str,
                encoder_version: int, config: IndexConfig = IndexConfig()) -> dict:
    """Write `items.hnsw` + `index.json` (labels are row numbers into `item_ids`); returns the metadata."""
    import hnswlib

    if len(embeddings) != len(item_ids):
        raise ValueError(f"{len(embeddings)} embeddings for {len(item_ids)} item ids")
    directory.mkdir(parents=True, exist_ok=True)
    n, dim = embeddings.shape
    index = hnswlib.Index(space="cosine", dim=dim)
    # Headroom so items added while serving fit without an immediate resize.
    index.init_index(max_elements=max(n * 2, 1024), ef_construction=config.ef_construction, M=config.m,
                     random_seed=config.seed)
    index.set_num_threads(config.threads)
    index.add_items(embeddings.astype(np.float32), np.arange(n))
    index.set_ef(config.ef_search)
    index.save_index(str(directory / INDEX_FILE))
    meta = {
        "space": "cosine",
        "dim": int(dim),
        "n_items": int(n),
        "m": config.m,
        "ef_construction": config.ef_construction,
        "ef_search": config.ef_search,
        "item_ids": list(item_ids),
        "encoder_checksum": encoder_checksum,
        "encoder_version": encoder_version,
    }
    (directory / INDEX_META_FILE).write_text(json.dumps(meta))
    return meta

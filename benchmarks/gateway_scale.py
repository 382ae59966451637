"""Gateway load suite, bar 5 (catalogue size): the build's bundle padded with synthetic items up to each
asked size, and the closed loop at concurrency 1 on every size."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .gateway_config import GatewayLoadConfig
from .gateway_loadgen import closed_loop, measure
from .gateway_metrics import wait_until_idle
from .gateway_processes import _link_or_copy, start_path
from .gateway_stats import _progress_line, _record


SCALE_NOISE = 0.5  # synthetic item noise per dimension, in units of the real embeddings' std
SCALE_CHUNK = 100_000


def _scaled_embeddings(real: np.ndarray, n_extra: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n_extra` unit vectors, each a random real vector plus Gaussian noise (and the anchors' rows)."""
    rng = np.random.default_rng(seed)
    scale = (SCALE_NOISE * real.std(axis=0)).astype(np.float32)
    anchors = rng.integers(0, len(real), n_extra)
    out = np.empty((n_extra, real.shape[1]), np.float32)
    for start in range(0, n_extra, SCALE_CHUNK):
        stop = min(start + SCALE_CHUNK, n_extra)
        block = real[anchors[start:stop]] + rng.standard_normal((stop - start, real.shape[1]), np.float32) * scale
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, anchors


def scale_bundle(build_dir: Path, n_items: int, out_dir: Path, *, seed: int = 42, progress=print) -> Path:
    """A build folder serving the build's latest bundle padded with synthetic items to `n_items` items.

    The model repository is shared (hard links), so the encoder and its checksums are the build's; the
    bundle gets the padded catalogue, embeddings, zero ALS factors and popularity for the new items, a
    rebuilt hnswlib index (the build's M / ef settings) and a manifest naming its origin. A folder that
    already holds the same padding of the same bundle is reused as it is.
    """
    import dataclasses

    from lmrec.export.dataset import ItemInfo
    from lmrec.export.index_build import IndexConfig, build_index
    from lmrec.export.repository import BUNDLES_DIR, REPOSITORY_DIR, publish_bundle, stage_bundle
    from lmrec.export.snapshot import load_snapshot, save_snapshot
    from lmrec.server.bundle import complete_versions, verify_bundle

    build_dir, out_dir = Path(build_dir).resolve(), Path(out_dir)
    versions = complete_versions(build_dir)
    if not versions:
        raise FileNotFoundError(f"no complete bundle under {build_dir / BUNDLES_DIR}")
    version = versions[-1]
    manifest = verify_bundle(build_dir, version)
    if manifest.get("ranker"):
        raise ValueError(f"bundle {version} of {build_dir} has a fusion ranker: its pickled model knows its items, "
                         "so it cannot be padded with synthetic ones (scale a build made without --fused)")
    n_real = int(manifest["n_items"])
    if n_items < n_real:
        raise ValueError(f"cannot scale {build_dir} ({n_real} items) down to {n_items} items")
    origin = {"build_dir": str(build_dir), "version": version, "created": manifest["created"],
              "n_real_items": n_real, "n_items": n_items, "seed": seed, "noise_scale": SCALE_NOISE}
    if complete_versions(out_dir):
        existing = json.loads((out_dir / BUNDLES_DIR / str(version) / "manifest.json").read_text()) \
            if (out_dir / BUNDLES_DIR / str(version) / "manifest.json").is_file() else {}
        if existing.get("scaled_from") == origin:
            verify_bundle(out_dir, version)
            return out_dir
        raise FileExistsError(f"{out_dir} holds another build; remove it or pick another scale folder")
    started = time.perf_counter()
    source = build_dir / BUNDLES_DIR / str(version)
    progress(f"padding bundle {version} of {build_dir} from {n_real:,} to {n_items:,} items in {out_dir} ...")
    shutil.rmtree(out_dir / REPOSITORY_DIR, ignore_errors=True)
    shutil.copytree(build_dir / REPOSITORY_DIR, out_dir / REPOSITORY_DIR, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    staged = stage_bundle(out_dir, version)

    real = np.load(source / "item_embeddings.npy")
    extra, anchors = _scaled_embeddings(real, n_items - n_real, seed)
    embeddings = np.concatenate([real, extra])
    del extra
    dataset = load_snapshot(source)
    new_ids = tuple(f"synthetic-{n}" for n in range(n_items - n_real))
    taken = set(dataset.item_ids).intersection(new_ids)
    if taken:
        raise ValueError(f"the catalogue already uses ids like {sorted(taken)[0]!r}")
    anchor_items = [dataset.items[a] for a in anchors.tolist()]
    new_items = tuple(ItemInfo(title=f"Synthetic item {n}", categories=anchor.categories, year=anchor.year)
                      for n, anchor in enumerate(anchor_items))
    padded = dataclasses.replace(dataset, item_ids=dataset.item_ids + new_ids, items=dataset.items + new_items)
    save_snapshot(padded, staged)
    np.save(staged / "item_embeddings.npy", embeddings)
    cf = dict(np.load(source / "cf.npz"))
    n_extra = n_items - n_real
    cf["item_factors"] = np.concatenate([cf["item_factors"], np.zeros((n_extra, cf["item_factors"].shape[1]),
                                                                      cf["item_factors"].dtype)])
    cf["popularity"] = np.concatenate([cf["popularity"], np.zeros(n_extra, cf["popularity"].dtype)])
    np.savez(staged / "cf.npz", **cf)
    index = manifest["index"]
    progress(f"  building the hnswlib index over {n_items:,} items (M={index['m']}, "
             f"ef_construction={index['ef_construction']}) ...")
    meta = build_index(embeddings, list(padded.item_ids), staged, encoder_checksum=index["encoder_checksum"],
                       encoder_version=index["encoder_version"],
                       config=IndexConfig(m=index["m"], ef_construction=index["ef_construction"],
                                          ef_search=index["ef_search"], threads=os.cpu_count() or 1))
    new_manifest = {k: v for k, v in manifest.items() if k not in ("files", "version", "created")}
    new_manifest.update(n_items=n_items, index={k: v for k, v in meta.items() if k != "item_ids"},
                        scaled_from=origin)
    publish_bundle(out_dir, staged, version, new_manifest)
    verify_bundle(out_dir, version)
    progress(f"  padded bundle ready in {time.perf_counter() - started:.0f}s")
    return out_dir


def measure_scale(config: GatewayLoadConfig, build_dir: Path, work: Path, populations: dict, users: list[str],
                  *, progress=print, on_record=None) -> list[dict]:
    """Closed loop at concurrency 1 on the bundle padded to each size, sizes alternating per cell."""
    from lmrec.client import RecommenderClient

    sizes = sorted(set(config.scale_items))
    folder = Path(config.scale_dir) if config.scale_dir else build_dir.parent / f"{build_dir.name}-scaled"
    builds = {n: scale_bundle(build_dir, n, folder / str(n), seed=config.seed, progress=progress) for n in sizes}
    records = []
    with contextlib.ExitStack() as stack:
        paths = {}
        for n in sizes:
            paths[n] = start_path(f"lmrec@{n}", builds[n], work, config, stack, progress=progress)
            with RecommenderClient(paths[n].address, timeout_s=60.0) as client:
                for user in users:
                    client.recommend(user, k=config.k)
            for population in populations.values():
                asyncio.run(closed_loop(paths[n].address, population, 1, config.warmup_s, k=config.k,
                                        timeout_s=config.timeout_s))
            wait_until_idle(paths[n], 600.0)
        for turn, population in enumerate(populations):
            for n in (sizes if turn % 2 == 0 else sizes[::-1]):
                samples, delta = measure(paths[n], closed_loop, populations[population], 1, config.duration_s,
                                         k=config.k, timeout_s=config.timeout_s)
                record = _record("scale", "lmrec", population, samples, delta, concurrency=1, n_items=n)
                records.append(record)
                progress(_progress_line(record))
                if on_record:
                    on_record(record)
    return records

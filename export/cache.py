"""The per-machine cache of exported encoders and fine-tuned models: list it, and prune it.

Entries live under `$LMREC_CACHE_DIR` (default `~/.cache/lmrec`): `encoders/<hash>` (one ONNX export, fp32
and int8, about 150 MB: the int8 file keeps the word embeddings in fp32) and `finetuned/<hash>` (one fine-tuned model, about 90 MB). A benchmark session
that tries many recipes leaves hundreds of them behind, so every use touches the entry's `.last_used`
marker and `prune_cache` removes the least recently used first. A removed entry is simply rebuilt on its
next use: an export takes seconds, a fine-tune minutes.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

KINDS = ("encoders", "finetuned")
LAST_USED = ".last_used"
# Staging folders (`<hash>-XXXX`) belong to an export still running, or to one that died: only old ones go.
STAGING_GRACE_S = 24 * 3600


def cache_dir() -> Path:
    return Path(os.environ.get("LMREC_CACHE_DIR", Path.home() / ".cache" / "lmrec"))


def mark_used(directory: Path) -> None:
    """Record that a cache entry was just used (best effort: a read-only cache still works)."""
    try:
        (Path(directory) / LAST_USED).touch()
    except OSError:
        pass


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    staging: bool


def _folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def _last_used(path: Path) -> float:
    marker = path / LAST_USED
    try:
        return marker.stat().st_mtime
    except OSError:  # written before markers existed: the folder's own time is the best we have
        return path.stat().st_mtime


def list_cache(root: Path | None = None) -> list[CacheEntry]:
    """Every entry, least recently used first."""
    root = Path(root) if root is not None else cache_dir()
    entries = []
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_dir():
                entries.append(CacheEntry(kind=kind, path=path, bytes=_folder_bytes(path),
                                          last_used=_last_used(path), staging="-" in path.name))
    return sorted(entries, key=lambda entry: entry.last_used)


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    max_bytes: int | None = None  # keep the most recently used entries that fit in this many bytes
    older_than_days: float | None = None  # remove entries not used for this long
    dry_run: bool = False  # report what would go, remove nothing
    root: Path | None = None  # None: cache_dir()

    def __post_init__(self) -> None:
        if self.max_bytes is None and self.older_than_days is None:
            raise ValueError("say what to prune: a size to keep the cache under, an age, or both")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError(f"the size to keep the cache under must be >= 0, got {self.max_bytes} bytes")
        if self.older_than_days is not None and self.older_than_days < 0:
            raise ValueError(f"the age must be >= 0 days, got {self.older_than_days}")


def prune_cache(config: PruneConfig, *, now: float | None = None) -> list[CacheEntry]:
    """Remove (or, dry run, pick) entries: stale staging folders, then by age, then least recently used
    until the rest fits in `max_bytes`. Returns what was removed."""
    now = time.time() if now is None else now
    entries = list_cache(config.root)
    doomed: list[CacheEntry] = []
    kept: list[CacheEntry] = []
    for entry in entries:
        idle = now - entry.last_used
        if entry.staging:
            (doomed if idle > STAGING_GRACE_S else kept).append(entry)
        elif config.older_than_days is not None and idle > config.older_than_days * 86400:
            doomed.append(entry)
        else:
            kept.append(entry)
    if config.max_bytes is not None:
        total = sum(entry.bytes for entry in kept)
        for entry in [e for e in kept if not e.staging]:  # least recently used first
            if total <= config.max_bytes:
                break
            doomed.append(entry)
            total -= entry.bytes
    if not config.dry_run:
        for entry in doomed:
            shutil.rmtree(entry.path, ignore_errors=True)
    return doomed

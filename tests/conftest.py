"""Shared fixtures: where the real MovieLens data lives (read in place: its licence forbids copies)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def unavailable(reason: str):
    """A required part is missing: fail on CI (`CI=true`), skip with the reason elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_shared_dataset(name: str = "") -> Path:
    """Path of `../shared/data/<name>`; skips the test when it is absent, fails instead on CI."""
    path = SHARED_DATA / name if name else SHARED_DATA
    if not path.is_dir():
        unavailable(f"shared data set {name or 'folder'} not found at {path} (unpack MovieLens into ../shared/data)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared_dataset()


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return require_shared_dataset("ml-100k")


@pytest.fixture(scope="session")
def ml_latest_small_dir() -> Path:
    return require_shared_dataset("ml-latest-small")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket listens on for the whole test: what a start-up must refuse by name."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]

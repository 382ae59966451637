"""`lmrec profile --build-dir`, offline: what lmrec knows about a user — profile text, recent items, LM
interest tags. Without `--build-dir` the verb asks the running gateway instead (`cmd_remote_profile` in
lmrec/cli_client.py, GetUserProfile).

Reads a build's bundle and runs the very encoder version that bundle serves (locally, through ONNX
Runtime), so the tags shown are the ones the served encoder would find.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    build_dir: Path
    user_id: str
    top_tags: int = 5
    bundle_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class UserProfile:
    user_id: str
    bundle_version: int
    profile_text: str
    recent_items: list[tuple[str, str]]  # (item id, title), newest first
    interest_tags: list[tuple[str, float]]


def build_profile(config: ProfileConfig) -> UserProfile:
    from lmrec.encoder import OnnxTextEncoder
    from lmrec.export.interest_tags import InterestTagger, tag_vocabulary
    from lmrec.export.repository import REPOSITORY_DIR
    from lmrec.server.bundle import load_bundle
    from lmrec.text import MAX_PROFILE_ITEMS, profile_text_of

    bundle = load_bundle(config.build_dir, config.bundle_version, retriever="exact")
    dataset = bundle.dataset
    user = dataset.user_index().get(config.user_id)
    if user is None:
        raise ValueError(f"--user {config.user_id!r} is not in bundle {bundle.version} "
                         f"({dataset.n_users} users, e.g. {', '.join(dataset.user_ids[:3])})")
    history = dataset.histories()[user][::-1]
    text = profile_text_of([dataset.items[i] for i in history], attributes=dataset.users[user].attributes)
    encoder_dir = Path(config.build_dir) / REPOSITORY_DIR / bundle.encoder_model / str(bundle.encoder_version)
    encoder = OnnxTextEncoder(encoder_dir)
    vocabulary = tag_vocabulary(dataset)
    tags = []  # a catalogue without genres, decades or tags has no interest tags; the rest still shows
    if vocabulary and text:
        tags = InterestTagger(encoder, vocabulary).tag_users(encoder.encode([text]), top_n=config.top_tags)[0]
    recent = [(dataset.item_ids[i], dataset.items[i].title) for i in np.asarray(history)[:MAX_PROFILE_ITEMS]]
    return UserProfile(user_id=config.user_id, bundle_version=bundle.version, profile_text=text,
                       recent_items=recent, interest_tags=tags)


def describe_profile(config: ProfileConfig) -> str:
    profile = build_profile(config)
    lines = [f"user {profile.user_id} (bundle {profile.bundle_version})",
             "interest tags: " + (", ".join(f"{tag} {weight:.2f}" for tag, weight in profile.interest_tags)
                                  or "none (the catalogue has no genres, decades or tags)"),
             "recent items (newest first):"]
    lines += [f"  {item_id:>8}  {title}" for item_id, title in profile.recent_items]
    lines += ["profile text:", "  " + profile.profile_text]
    return "\n".join(lines)

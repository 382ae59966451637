"""`lmrec profile`: profile text, recent items newest first, and interest tags from the served encoder."""

from __future__ import annotations

import pytest

from lmrec.cli import main
from lmrec.profiles import ProfileConfig, build_profile


def test_profile_of_a_known_user(tiny_build_dir):
    build_dir = tiny_build_dir.bundle_dir.parent.parent
    from lmrec.server.bundle import load_bundle

    dataset = load_bundle(build_dir).dataset
    user_id = dataset.user_ids[3]
    profile = build_profile(ProfileConfig(build_dir=build_dir, user_id=user_id, top_tags=3))
    history = dataset.histories()[3]
    assert profile.recent_items[0][0] == dataset.item_ids[history[-1]]  # newest first
    assert profile.recent_items[0][1] in profile.profile_text
    assert 1 <= len(profile.interest_tags) <= 3
    weights = [w for _, w in profile.interest_tags]
    assert weights == sorted(weights, reverse=True) and weights[0] == pytest.approx(1.0)
    # The top tag is one of the genres the user's recent items carry (the synthetic data's categories).
    recent_genres = {c for i in history[-10:] for c in dataset.items[i].categories}
    assert profile.interest_tags[0][0] in recent_genres


def test_unknown_user_is_a_one_line_cli_error(tiny_build_dir, capsys):
    build_dir = tiny_build_dir.bundle_dir.parent.parent
    assert main(["profile", "--build-dir", str(build_dir), "--user", "ghost"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmrec profile: error: --user 'ghost'") and err.count("\n") == 1

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


@pytest.mark.parametrize("extra, message", [
    (["--address", "127.0.0.1:1"], "--address and --timeout ask a running gateway, --build-dir reads a build offline"),
    (["--timeout", "3"], "--address and --timeout ask a running gateway"),
])
def test_options_for_the_gateway_are_refused_with_build_dir(tiny_build_dir, capsys, extra, message):
    """They were silently ignored: the profile came from the build, not from the gateway asked for."""
    build_dir = tiny_build_dir.bundle_dir.parent.parent
    user_id = tiny_build_dir_user(build_dir)
    assert main(["profile", "--build-dir", str(build_dir), "--user", user_id, *extra]) == 2
    assert message in capsys.readouterr().err
    assert main(["profile", "--build-dir", str(build_dir), "--user", user_id, "--bundle-version", "1"]) == 0
    assert f"user {user_id} (bundle 1)" in capsys.readouterr().out


def test_a_bundle_version_without_build_dir_is_refused_before_asking(capsys, monkeypatch):
    """The gateway answers from the bundle it serves, so the version asked for was silently ignored."""
    assert main(["profile", "--user", "u1", "--bundle-version", "2"]) == 2
    assert "--bundle-version 2 reads one bundle of a build offline: it needs --build-dir" in capsys.readouterr().err
    monkeypatch.setenv("LMREC_ADDRESS", "127.0.0.1")
    assert main(["profile", "--user", "u1"]) == 2
    assert "LMREC_ADDRESS='127.0.0.1'" in capsys.readouterr().err


def tiny_build_dir_user(build_dir) -> str:
    from lmrec.server.bundle import load_bundle

    return load_bundle(build_dir).dataset.user_ids[0]

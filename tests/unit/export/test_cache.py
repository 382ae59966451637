"""The model cache: listing by last use, pruning by age and by size, staging folders, bad values."""

from __future__ import annotations

import os
import time

import pytest

from lmrec.cli import main
from lmrec.export.cache import LAST_USED, STAGING_GRACE_S, PruneConfig, list_cache, mark_used, prune_cache

NOW = time.time()
DAY = 86400.0


def _entry(root, kind, name, size, used_days_ago, *, marker=True):
    folder = root / kind / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * size)
    when = NOW - used_days_ago * DAY
    if marker:
        (folder / LAST_USED).touch()
        os.utime(folder / LAST_USED, (when, when))
    os.utime(folder, (when, when))
    return folder


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    _entry(root, "encoders", "old", 400, 30)
    _entry(root, "finetuned", "middle", 300, 5)
    _entry(root, "encoders", "recent", 200, 1)
    _entry(root, "finetuned", "premarker", 100, 10, marker=False)  # made before markers: folder time counts
    return root


def test_entries_are_listed_least_recently_used_first_with_their_sizes(cache):
    entries = list_cache(cache)
    assert [e.path.name for e in entries] == ["old", "premarker", "middle", "recent"]
    assert [e.bytes for e in entries] == [400, 100, 300, 200]
    assert {e.kind for e in entries} == {"encoders", "finetuned"}


def test_pruning_by_age_removes_only_entries_idle_for_longer(cache):
    removed = prune_cache(PruneConfig(older_than_days=7, root=cache), now=NOW)
    assert sorted(e.path.name for e in removed) == ["old", "premarker"]
    assert sorted(e.path.name for e in list_cache(cache)) == ["middle", "recent"]


def test_pruning_by_size_keeps_the_most_recently_used_that_fit(cache):
    removed = prune_cache(PruneConfig(max_bytes=550, root=cache), now=NOW)
    assert [e.path.name for e in removed] == ["old", "premarker"]  # 1000 → 500 bytes, oldest first
    assert sum(e.bytes for e in list_cache(cache)) == 500


def test_a_dry_run_removes_nothing(cache):
    removed = prune_cache(PruneConfig(max_bytes=0, dry_run=True, root=cache), now=NOW)
    assert len(removed) == 4 and len(list_cache(cache)) == 4


def test_a_fresh_staging_folder_is_left_to_its_export_and_a_stale_one_goes(cache):
    _entry(cache, "encoders", "abc-tmp1", 50, STAGING_GRACE_S / DAY / 2)
    _entry(cache, "encoders", "abc-tmp2", 50, 2 * STAGING_GRACE_S / DAY)
    removed = prune_cache(PruneConfig(max_bytes=0, root=cache), now=NOW)
    assert "abc-tmp2" in {e.path.name for e in removed}
    assert [e.path.name for e in list_cache(cache)] == ["abc-tmp1"]


def test_using_an_entry_moves_it_to_the_back_of_the_queue(cache):
    mark_used(cache / "encoders" / "old")  # now
    assert list_cache(cache)[-1].path.name == "old"
    removed = prune_cache(PruneConfig(max_bytes=450, root=cache))
    assert "old" not in {e.path.name for e in removed}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "say what to prune"),
    ({"max_bytes": -1}, "must be >= 0, got -1 bytes"),
    ({"older_than_days": -2.0}, "the age must be >= 0 days, got -2.0"),
])
def test_a_prune_that_cannot_mean_anything_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_cli_lists_prunes_and_names_bad_values(cache, monkeypatch, capsys):
    monkeypatch.setenv("LMREC_CACHE_DIR", str(cache))
    assert main(["cache"]) == 0
    assert "4 entries" in capsys.readouterr().out
    for bad in ("-1", "inf", "nan"):  # refused while parsing (inf used to end in an OverflowError traceback)
        with pytest.raises(SystemExit) as refused:
            main(["cache", "--prune", "--max-gb", bad, "--dry-run"])
        assert refused.value.code == 2 and f"argument --max-gb: the value must be a finite number at least 0, got '{bad}'" \
            in capsys.readouterr().err
    assert main(["cache", "--prune"]) == 2
    assert "--prune needs --max-gb" in capsys.readouterr().err
    assert main(["cache", "--max-gb", "1"]) == 2
    assert "go with --prune" in capsys.readouterr().err
    assert main(["cache", "--prune", "--max-gb", "0", "--dry-run"]) == 0
    assert "would remove 4 entries" in capsys.readouterr().out and len(list_cache(cache)) == 4
    assert main(["cache", "--prune", "--max-gb", "0"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out and list_cache(cache) == []


def test_loading_an_encoder_from_the_cache_marks_its_entry_used(tmp_path, monkeypatch):
    import lmrec.export.encoder_export as encoder_export
    from lmrec.export.models import lm

    def fake_export(config, progress=None):
        (config.output_dir / encoder_export.INT8_FILE).write_bytes(b"int8")

    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(encoder_export, "export_encoder", fake_export)
    monkeypatch.setattr(lm, "OnnxTextEncoder", lambda directory, onnx_file: directory)
    monkeypatch.setattr(lm, "_ENCODERS", {})
    directory = lm.exported_encoder(str(tmp_path / "some-model"), "int8")
    assert (directory / LAST_USED).is_file()
    assert [e.path for e in list_cache(tmp_path)] == [directory]


def test_a_model_folder_is_keyed_by_its_weights_not_its_path(tmp_path):
    """The packaged MiniLM lives in the virtual environment: keyed by path, every new venv missed the cache
    and left ~0.4 GB of unreachable entries behind."""
    from lmrec.export.models.lm import model_identity

    first, second, other = (tmp_path / name for name in ("venv-a", "venv-b", "changed"))
    for folder, weights in ((first, b"same weights"), (second, b"same weights"), (other, b"other weights")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    assert model_identity(str(first)) == model_identity(str(second)) != model_identity(str(other))
    assert model_identity("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_fine_tunes_of_the_same_base_weights_share_a_key(tmp_path):
    from lmrec.export.finetune import FinetuneConfig
    from lmrec.export.loaders import DataConfig, load_dataset
    from lmrec.export.models.lm import training_fingerprint

    dataset = load_dataset(DataConfig(dataset="synthetic")).dataset
    keys = []
    for name, weights in (("venv-a", b"same weights"), ("venv-b", b"same weights"), ("changed", b"other")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(weights)
        config = FinetuneConfig(base_model=str(tmp_path / name))
        keys.append(training_fingerprint(dataset, dataset.interactions, config))
    assert keys[0] == keys[1] != keys[2]

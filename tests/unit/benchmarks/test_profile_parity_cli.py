"""The two `python -m lmrec.benchmarks.X` scripts that compare int8 recipes and profile the encoder take
`--out` like every `lmrec bench` suite (they took `--out-dir`), and refuse an unusable results folder or
name while parsing, in one line, before any export or measurement."""

from __future__ import annotations

import pytest

SCRIPTS = ("encoder_profile", "int8_parity")


def _script(name: str, monkeypatch):
    """The script's module, with every measurement it could start replaced by a failure."""
    import importlib

    module = importlib.import_module(f"lmrec.benchmarks.{name}")
    if name == "int8_parity":
        monkeypatch.setattr(module, "parity_texts", lambda data_dir: ["a text"])
        monkeypatch.setattr(module, "measure_recipes", lambda *a, **k: pytest.fail("measured"))
    else:
        monkeypatch.setattr(module, "run_profile", lambda *a, **k: pytest.fail("profiled"))
    return module


def _refused(module, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        module.main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_out_folder_that_cannot_be_written_is_refused_while_parsing(script, tmp_path, monkeypatch, capsys):
    """encoder_profile checked nothing and failed only after the whole profile, at `write_report`."""
    (tmp_path / "file").write_text("")
    module = _script(script, monkeypatch)
    err = _refused(module, ["--data-dir", str(tmp_path), "--out", str(tmp_path / "file" / "x")], capsys)
    assert f"error: --out {tmp_path / 'file' / 'x'}/" in err and "file is not a folder" in err
    assert len(err.strip().splitlines()[-1]) < 400  # one line after the usage, no traceback


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden"])
def test_a_name_with_a_folder_in_it_is_refused_while_parsing(script, name, tmp_path, monkeypatch, capsys):
    module = _script(script, monkeypatch)
    err = _refused(module, ["--data-dir", str(tmp_path), "--out", str(tmp_path), "--name", name], capsys)
    assert f"error: --name {name!r}: a file name without folders (the files go to --out)" in err


@pytest.mark.parametrize("script", SCRIPTS)
def test_out_dir_is_no_longer_an_option(script, tmp_path, monkeypatch, capsys):
    module = _script(script, monkeypatch)
    err = _refused(module, ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path)], capsys)
    assert "unrecognized arguments: --out-dir" in err

"""Triton launcher checks that need no running server (starting Triton is an integration test)."""

from __future__ import annotations

import os
import socket

import pytest

from lmrec.server.triton_launcher import TritonError, check_repository, find_triton, free_port


def test_missing_repository(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(TritonError, match="does not exist") as raised:
        check_repository(missing, ("text_encoder",))
    assert str(missing) in str(raised.value) and "lmrec build" in str(raised.value)


def test_model_without_config(tmp_path):
    (tmp_path / "text_encoder" / "1").mkdir(parents=True)
    with pytest.raises(TritonError, match="'text_encoder' has no config.pbtxt") as raised:
        check_repository(tmp_path, ("text_encoder",))
    assert "lmrec build" in str(raised.value)
    # A model folder that does not exist at all is reported the same way.
    with pytest.raises(TritonError, match="'other' has no config.pbtxt"):
        check_repository(tmp_path, ("other",))


def test_model_without_version_folder(tmp_path):
    model = tmp_path / "text_encoder"
    model.mkdir()
    (model / "config.pbtxt").write_text('name: "text_encoder"\n')
    (model / "notes").mkdir()  # not a version
    (model / "2").write_text("a file named like a version")
    with pytest.raises(TritonError, match="'text_encoder' has no version folder") as raised:
        check_repository(tmp_path, ("text_encoder",))
    assert "lmrec build" in str(raised.value)
    (model / "1").mkdir()
    (model / "1" / "model.py").write_text("# adapter\n")
    check_repository(tmp_path, ("text_encoder",))


def test_empty_latest_version_folder(tmp_path):
    model = tmp_path / "text_encoder"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("# adapter\n")
    (model / "10").mkdir()  # numerically the latest, though "2" < "10" would sort it first as text
    (model / "2").mkdir()
    (model / "2" / "model.py").write_text("# adapter\n")
    (model / "config.pbtxt").write_text('name: "text_encoder"\n')
    with pytest.raises(TritonError, match="version 10 is empty") as raised:
        check_repository(tmp_path, ("text_encoder",))
    assert str(model / "10") in str(raised.value)


def test_the_tiny_build_repository_passes(tiny_build_dir):
    check_repository(tiny_build_dir.repository_dir, ("text_encoder",))


def test_find_triton_in_the_installed_wheel():
    triton = find_triton()
    assert triton.binary.name == "tritonserver" and triton.binary.is_file()
    assert os.access(triton.binary, os.X_OK)
    assert (triton.python_backend_dir / "libtriton_python.so").is_file()
    assert triton.python_stub.is_file() and triton.library_dir.is_dir()


def test_free_port_gives_distinct_bindable_ports():
    ports = {free_port() for _ in range(5)}
    assert len(ports) == 5
    for port in ports:
        assert 1024 <= port <= 65535
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_launcher_that_never_starts_or_is_refused_leaves_no_folder(tmp_path, monkeypatch):
    """Each refused start (and each launcher never started) used to leave an empty lmrec-triton-* folder."""
    import tempfile

    from lmrec.server.triton_launcher import TritonConfig, TritonProcess

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    TritonProcess(TritonConfig(repository=tmp_path / "missing"))
    with pytest.raises(TritonError, match="run `lmrec build` first"):
        TritonProcess(TritonConfig(repository=tmp_path / "missing")).start()
    assert list(scratch.iterdir()) == []

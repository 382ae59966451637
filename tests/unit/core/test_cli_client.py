"""The gateway verbs' input parsing: item files and filters, with errors that name the bad value."""

from __future__ import annotations

import json

import pytest

from lmrec.cli_client import CliError, _attributes, _require_filters, message_json, read_items_file


def test_items_from_json_lines_and_json_list(tmp_path):
    lines = tmp_path / "items.jsonl"
    lines.write_text(json.dumps({"item_id": "a", "title": "A"}) + "\n\n" + json.dumps({"item_id": "b", "title": "B",
                                                                                     "year": 1999}) + "\n")
    assert [i["item_id"] for i in read_items_file(lines)] == ["a", "b"]
    listed = tmp_path / "items.json"
    listed.write_text(json.dumps([{"item_id": "c", "title": "C", "categories": ["X"]}]))
    assert read_items_file(listed)[0]["categories"] == ["X"]
    untitled = tmp_path / "untitled.json"  # a description (or tags) is text enough for the encoder
    untitled.write_text(json.dumps([{"item_id": "d", "description": "A heist in Paris."}, {"item_id": "e", "tags": "noir"}]))
    assert [i["item_id"] for i in read_items_file(untitled)] == ["d", "e"]


@pytest.mark.parametrize("text, message", [
    ('{"item_id": "a"}\n', "line 1 has no text: give it a title, a description or tags"),
    ('{"item_id": "a", "title": " ", "tags": [" "]}\n', "line 1 has no text"),
    ('{"title": "A"}\n', "line 1 needs a non-empty item_id"),
    ('{"item_id": "a", "title": "A", "colour": "red"}\n', "unknown field(s) ['colour']"),
    ('{"item_id": "a", "title": "A"}\nnot json\n', "line 2"),
    ('[1]', "item 1 is not an object"),
])
def test_bad_item_files(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(CliError) as raised:
        read_items_file(path)
    assert message in str(raised.value) and str(path) in str(raised.value)


def test_missing_file(tmp_path):
    with pytest.raises(CliError, match="cannot read"):
        read_items_file(tmp_path / "nope.json")


def test_filters_and_attributes():
    assert _require_filters(["genre=Comedy,Drama", "decade=1990s"]) == [("genre", ["Comedy", "Drama"]),
                                                                       ("decade", ["1990s"])]
    # Repeated, one key means both filters hold (the values within one --require are the alternatives).
    assert _require_filters(["genre=Horror", "genre=Comedy"]) == [("genre", ["Horror"]), ("genre", ["Comedy"])]
    with pytest.raises(CliError, match="--require 'genre=,'"):
        _require_filters(["genre=,"])
    with pytest.raises(CliError, match="--require 'genre'"):
        _require_filters(["genre"])
    assert _attributes(["occupation=student"]) == {"occupation": "student"}
    with pytest.raises(CliError, match="--attribute '=x'"):
        _attributes(["=x"])


def test_blank_lines_keep_line_numbers_right(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "title": "A"}\n\n{"item_id": "b"}\n')
    with pytest.raises(CliError, match="line 3 has no text"):
        read_items_file(path)


def test_json_output_keeps_zero_and_false_fields():
    import json

    from lmrec.v1 import recommender_pb2 as pb

    status = json.loads(message_json(pb.StatusResponse(bundle_version="1", n_items=80)))
    assert status["recordedEvents"] == "0" and status["degraded"] is False and status["cacheHitRatio"] == 0.0
    item = json.loads(message_json(pb.RecommendedItem(item_id="i1", signals=[pb.SignalScore(signal="als")])))
    assert item["signals"] == [{"signal": "als", "score": 0.0}]


@pytest.mark.parametrize("item, message", [
    ({"year": [1990]}, "year must be a whole number"),
    ({"year": "abc"}, "year must be a whole number"),
    ({"year": "\u00b2"}, "year must be a whole number"),  # isdigit() took a superscript two, int() did not
    ({"year": 99_999_999_999}, "year 99999999999 is out of range"),
    ({"year": "99999999999"}, "year 99999999999 is out of range"),
    ({"attributes": ["a"]}, "attributes must be an object"),
    ({"title": 5.5}, "title must be a string"),
    ({"categories": {"a": 1}}, "categories must be a list of strings"),
])
def test_a_field_of_the_wrong_type_is_named_with_its_line(tmp_path, item, message):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"item_id": "a", "title": "A"}) + "\n" + json.dumps({"item_id": "b", "title": "B", **item}) + "\n")
    with pytest.raises(CliError, match=rf"line 2: {message}"):
        read_items_file(path)


def test_a_byte_order_mark_and_a_non_utf8_file(tmp_path):
    listed = tmp_path / "items.json"
    listed.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"item_id": "a", "title": "A", "categories": "Drama"}]).encode())
    assert read_items_file(listed)[0]["item_id"] == "a"
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps({"item_id": "a", "title": "Am\u00e9lie"}).encode().replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(CliError, match="latin.jsonl is not UTF-8"):
        read_items_file(latin)


# --- the verbs' own checks, before any connection: nothing listens on these addresses ---------------------

def _run(capsys, *argv: str) -> tuple[int, str]:
    from lmrec.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exited:  # argparse's refusals
        code = exited.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def test_similar_refuses_an_item_and_a_text_together(capsys):
    """The request holds one of them: the text was dropped, unseen."""
    code, err = _run(capsys, "similar", "--item", "50", "--text", "robots", "--address", "127.0.0.1:9")
    assert code == 2 and "give --item ID or --text TEXT, not both" in err


def test_a_bad_lmrec_address_is_named_as_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("LMREC_ADDRESS", "bad")
    code, err = _run(capsys, "status")
    assert code == 2 and "LMREC_ADDRESS='bad'" in err and "--address" not in err.split(":")[0]


@pytest.mark.parametrize("verb", [["status"], ["profile", "--user", "1"]])
def test_lmrec_address_is_the_default_address(capsys, monkeypatch, verb):
    """profile's hint said 'no gateway answers at None'."""
    monkeypatch.setenv("LMREC_ADDRESS", "127.0.0.1:9")
    code, err = _run(capsys, *verb, "--timeout", "0.5")
    assert code != 0 and "no gateway answers at 127.0.0.1:9" in err


def test_deploy_keeps_the_deadline_it_is_given(monkeypatch):
    """`deploy --timeout 1` was silently raised to 30 s."""
    from lmrec.cli import main
    from lmrec.client import client as client_module

    asked = {}

    def fake_deploy(self, version, *, timeout_s=None):
        asked["timeout_s"] = timeout_s
        raise client_module.ClientError("UNAVAILABLE", "stop here")

    monkeypatch.setattr(client_module.RecommenderClient, "deploy", fake_deploy)
    main(["deploy", "--version", "2", "--timeout", "1", "--address", "127.0.0.1:9"])
    assert asked == {"timeout_s": 1.0}


@pytest.mark.parametrize("argv", [["recommend", "--text"], ["recommend", "--user"], ["similar", "--item"],
                                  ["event", "--item", "i1", "--user"], ["forget", "--user"]])
def test_text_that_is_not_utf8_is_refused_naming_the_option(capsys, argv):
    """Such bytes reach Python as surrogate escapes; protobuf refused them later, naming no option."""
    code, err = _run(capsys, *argv, "caf\udce9", "--address", "127.0.0.1:9")
    assert code == 2 and f"argument {argv[-1]}: not UTF-8 text: b'caf\\xe9'" in err


def test_deploy_version_must_be_positive(capsys):
    code, err = _run(capsys, "deploy", "--version", "0", "--address", "127.0.0.1:9")
    assert code == 2 and "argument --version" in err


def test_an_empty_filtered_answer_says_why(capsys, monkeypatch):
    """`--require genre=SciFi` (the value is Sci-Fi) printed a bare header and nothing else."""
    from lmrec.cli import main
    from lmrec.client import client as client_module
    from lmrec.v1 import recommender_pb2 as pb

    monkeypatch.setattr(client_module.RecommenderClient, "recommend",
                        lambda self, *a, **kw: pb.RecommendResponse(bundle_version="1"))
    assert main(["recommend", "--user", "1", "--require", "genre=SciFi", "--address", "127.0.0.1:9"]) == 0
    assert "no unseen item matches every --require (genre=SciFi)" in capsys.readouterr().err
    assert main(["recommend", "--user", "1", "--address", "127.0.0.1:9"]) == 0
    assert "--require" not in capsys.readouterr().err


@pytest.mark.parametrize("previous, expected", [(1, "serving bundle 2 (was 1); switched in 3.2s"),
                                                (2, "already serving bundle 2; nothing changed")])
def test_deploy_says_when_nothing_changed(monkeypatch, capsys, previous, expected):
    """Deploying the version already served printed 'serving bundle 1 (was 1); switched in 0.0s'."""
    from lmrec.cli import main
    from lmrec.client import client as client_module
    from lmrec.v1 import recommender_pb2 as pb

    monkeypatch.setattr(client_module.RecommenderClient, "deploy", lambda self, version, *, timeout_s=None:
                        pb.DeployResponse(bundle_version="2", previous_version=str(previous), seconds=3.2))
    assert main(["deploy", "--version", "2", "--address", "127.0.0.1:9"]) == 0
    assert capsys.readouterr().out.strip() == expected


@pytest.mark.parametrize("as_json", [False, True])
def test_status_prints_lines_or_with_json_the_message(monkeypatch, capsys, as_json):
    from lmrec.cli import main
    from lmrec.client import client as client_module
    from lmrec.v1 import recommender_pb2 as pb

    monkeypatch.setattr(client_module.RecommenderClient, "status",
                        lambda self: pb.StatusResponse(bundle_version="1", available_versions=[1], n_items=80))
    assert main(["status", "--address", "127.0.0.1:9", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    if as_json:
        assert json.loads(out)["nItems"] == "80"
    else:
        assert out.splitlines()[0] == "bundle           1 (deployable: 1)" and "80 items" in out



def test_an_empty_filtered_answer_prints_the_gateways_notes(monkeypatch, capsys):
    from lmrec.cli import main
    from lmrec.client import client as client_module
    from lmrec.v1 import recommender_pb2 as pb

    monkeypatch.setattr(client_module.RecommenderClient, "recommend", lambda self, *args, **kwargs: pb.RecommendResponse(
        bundle_version="1", notes=["no item has genre = 'Westerns'; closest: Western"]))
    assert main(["recommend", "--user", "1", "--require", "genre=Westerns", "--address", "127.0.0.1:9"]) == 0
    err = capsys.readouterr().err
    assert "no unseen item matches every --require (genre=Westerns)" in err
    assert "no item has genre = 'Westerns'; closest: Western" in err

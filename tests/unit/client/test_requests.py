"""The request messages the client builds from plain Python values."""

from __future__ import annotations

import asyncio

import pytest

from lmrec.client.client import (AsyncRecommenderClient, RecommenderClient, _recommend_request, _similar_request,
                                  event_message, new_item)


def _filters(message) -> list[tuple[str, list[str]]]:
    return [(f.key, list(f.values)) for f in message.require]


def test_require_takes_a_mapping_or_pairs_and_single_values():
    by_mapping = _recommend_request("u1", (), "", 5, False, require={"genre": "Comedy", "year": 1975})
    assert _filters(by_mapping) == [("genre", ["Comedy"]), ("year", ["1975"])]
    by_pairs = _recommend_request("u1", (), "", 5, False, require=[("genre", ["Horror"]), ("genre", "Comedy")])
    assert _filters(by_pairs) == [("genre", ["Horror"]), ("genre", ["Comedy"])]  # both must hold


def test_require_takes_key_value_texts_as_on_the_command_line_and_names_the_forms_otherwise():
    one = _recommend_request("u1", (), "", 5, False, require="genre=Sci-Fi")
    assert _filters(one) == [("genre", ["Sci-Fi"])]
    several = _recommend_request("u1", (), "", 5, False, require=["genre=Comedy", " year = 1995 "])
    assert _filters(several) == [("genre", ["Comedy"]), ("year", ["1995"])]
    alternatives = _recommend_request("u1", (), "", 5, False, require="genre=Comedy, Drama")  # as --require reads it
    assert _filters(alternatives) == [("genre", ["Comedy", "Drama"])]
    for bad in ("genre", ["genre"], [("genre", "Comedy", "Drama")], [42]):
        with pytest.raises(ValueError, match="genre=Comedy") as caught:
            _recommend_request("u1", (), "", 5, False, require=bad)
        assert "require entry" in str(caught.value)


def test_zero_is_an_id_and_none_is_no_id():
    assert _recommend_request(0, (), "", 5, False).user_id == "0"
    assert _recommend_request(None, (), "", 5, False).user_id == ""
    # None must never become the user "None": forget_user(None) would delete that user's events.
    assert event_message(None, None).user_id == "" and event_message(None, None).item_id == ""
    assert event_message(0, 0).user_id == "0"
    assert new_item(None, "A Title").item_id == ""
    sent = []

    class Recording:
        def __getattr__(self, name):
            return lambda request, **kwargs: sent.append(request)

    client = RecommenderClient("127.0.0.1:1")
    client._stub = Recording()
    client.forget_user(None)
    client.profile(None)
    client.close()
    assert [message.user_id for message in sent] == ["", ""]
    assert _similar_request(0, "", 5).item_id == "0"
    assert _similar_request("", "space", 5).text == "space"


def test_a_none_among_item_ids_is_refused_by_position_not_sent_as_the_item_none():
    assert list(_recommend_request("u1", [0, "i7"], "", 5, False).recent_item_ids) == ["0", "i7"]
    with pytest.raises(ValueError, match=r"recent_item_ids\[1\] is None"):
        _recommend_request("u1", ["i1", None], "", 5, False)
    with pytest.raises(ValueError, match=r"exclude_item_ids\[0\] is None"):
        _recommend_request("u1", (), "", 5, False, exclude_item_ids=[None])


def test_categories_and_tags_given_as_one_string_are_one_value():
    item = new_item("n1", "A Title", categories="Comedy", tags="quirky")
    assert list(item.categories) == ["Comedy"] and list(item.tags) == ["quirky"]
    assert list(new_item("n2", "B", categories=None).categories) == []


def test_the_async_client_can_be_made_outside_the_loop_that_uses_it():
    asyncio.run(asyncio.sleep(0))  # an earlier loop, as in a script that ran another coroutine first
    client = AsyncRecommenderClient("127.0.0.1:1", timeout_s=0.2)

    async def use():
        async with client:
            try:
                await client.status()
            except Exception as error:  # noqa: BLE001 - nothing listens there: any ClientError will do
                return type(error).__name__

    assert asyncio.run(use()) == "ClientError"


def test_an_item_without_a_title_and_numbers_as_text():
    """A description alone describes an item (README); `new_item` required a title, and an int title or
    description, which the CLI's file check lets through, made protobuf raise a TypeError."""
    described = new_item("x9", description="a gentle film about robots")
    assert (described.title, described.description) == ("", "a gentle film about robots")
    assert new_item("x8", title=None, description=None).title == ""  # not the word "None", sent and encoded
    numbered = new_item(5, title=1984, description=7)
    assert (numbered.item_id, numbered.title, numbered.description) == ("5", "1984", "7")


def test_similar_items_takes_an_item_or_a_text_not_both():
    import pytest

    assert _similar_request("i1", "", 3).item_id == "i1" and _similar_request("", "robots", 3).text == "robots"
    with pytest.raises(ValueError, match="an item id or a text, not both"):
        _similar_request("i1", "robots", 3)  # the id was sent and the text dropped, unseen

"""Catalogue filters (the `require` of Recommend) and live appends."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.export.dataset import ItemInfo
from lmrec.server.catalogue import Catalogue, UnknownFilter, fields_of, item_info_of


@pytest.fixture
def catalogue():
    items = [ItemInfo(title="A", categories=("Comedy",), year=1995, tags=("Funny",)),
             ItemInfo(title="B", categories=("Horror", "Comedy"), year=2003, attributes={"Director": "Jane Roe"}),
             ItemInfo(title="C", categories=("Drama",), year=1999)]
    return Catalogue(["a", "b", "c"], items, n_base=3)


def test_no_filter_means_everything(catalogue):
    assert catalogue.eligible(()) is None


@pytest.mark.parametrize("filters, expected", [
    ((("genre", ("comedy",)),), [True, True, False]),
    ((("genres", ("Drama", "Horror")),), [False, True, True]),
    ((("decade", ("1990",)),), [True, False, True]),
    ((("decade", ("1990s",)), ("genre", ("Comedy",))), [True, False, False]),
    ((("year", ("2003",)),), [False, True, False]),
    ((("tag", ("funny",)),), [True, False, False]),
    ((("director", ("jane roe",)),), [False, True, False]),
    ((("genre", ("Western",)),), [False, False, False]),
])
def test_filters(catalogue, filters, expected):
    assert catalogue.eligible(filters).tolist() == expected


def test_a_value_no_item_has_is_named_with_the_closest_values_as_the_items_spell_them(catalogue):
    notes = catalogue.unmatched_filter_values([("genre", ("Comedies", "Drama")), ("director", ("jane rowe",)),
                                               ("year", ("1890",)), ("decade", ("1990",))])
    assert notes == ["no item has genre = 'Comedies'; closest: Comedy",
                     "no item has director = 'jane rowe'; closest: Jane Roe", "no item has year = '1890'"]
    assert catalogue.unmatched_filter_values([("genre", ("comedy",))]) == []
    many = catalogue.unmatched_filter_values([("genre", tuple(f"Nope{n}" for n in range(1000)))])
    assert len(many) == 3 and many[0].startswith("no item has genre = 'Nope0'")  # each note costs a comparison


def test_unknown_key_lists_the_known_ones(catalogue):
    with pytest.raises(UnknownFilter, match=r"'colour'.*decade, director, genre, tag, year"):
        catalogue.eligible((("colour", ("red",)),))


def test_unknown_key_lists_a_bounded_number_of_keys():
    """Hundreds of added attribute keys, all listed, pushed the INVALID_ARGUMENT past gRPC's metadata
    limit: the caller got RESOURCE_EXHAUSTED instead."""
    items = [ItemInfo(title=f"P{i}", attributes={f"spec_{i:03d}_{'x' * 60}": "1"}) for i in range(400)]
    catalogue = Catalogue([f"p{i}" for i in range(400)], items, n_base=400)
    with pytest.raises(UnknownFilter) as raised:
        catalogue.eligible((("colour", ("red",)),))
    message = str(raised.value)
    assert "known keys: spec_000_" in message and "spec_029_" in message and ", and 370 more" in message and len(message) < 2_000


def test_append_and_replace_refresh_the_filter_index(catalogue):
    row = catalogue.append("d", ItemInfo(title="D", categories=("Western",)))
    assert row == 3 and catalogue.index["d"] == 3 and len(catalogue) == 4
    assert catalogue.eligible((("genre", ("western",)),)).tolist() == [False, False, False, True]
    catalogue.replace(3, ItemInfo(title="D", categories=("Comedy",)))
    assert np.flatnonzero(catalogue.eligible((("genre", ("comedy",)),))).tolist() == [0, 1, 3]


def test_tag_keys_read_as_the_vocabulary_and_follow_a_replaced_item(catalogue):
    from lmrec.export.interest_tags import tag_key

    assert {tag_key("Comedy"), tag_key("1990s movies"), tag_key("funny")} <= catalogue.tag_keys(0)
    row = catalogue.append("d", ItemInfo(title="D", categories=("Sci-Fi",)))
    assert tag_key("sci fi") in catalogue.tag_keys(row)
    catalogue.replace(row, ItemInfo(title="D", categories=("Western",)))
    assert tag_key("Western") in catalogue.tag_keys(row) and tag_key("Sci-Fi") not in catalogue.tag_keys(row)


def test_fields_round_trip():
    info = ItemInfo(title="T", categories=("X",), description="d", year=2001, tags=("t",), attributes={"k": "v"})
    assert item_info_of(fields_of(info)) == info
    assert item_info_of({"title": "only"}).year is None

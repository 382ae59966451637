"""The shared item-text and profile-text builders (lmrec.text)."""

from __future__ import annotations

from pathlib import Path

from lmrec.export.dataset import ItemInfo
from lmrec.text import (MAX_DESCRIPTION_CHARS, MAX_PROFILE_ITEMS, build_item_text, build_user_profile_text,
                        describe_user, item_label, item_text_of, profile_text_of)


def test_item_text_is_deterministic_and_has_every_part():
    kwargs = dict(title="Toy Story", categories=("Animation", "Comedy"), description="Toys come alive.",
                  year=1995, tags=("pixar", "friendship"), attributes={"director": "John Lasseter"})
    text = build_item_text(**kwargs)
    assert text == build_item_text(**kwargs)
    for part in ("Toy Story (1995)", "Genres: Animation, Comedy.", "Tags: pixar, friendship.",
                 "Director: John Lasseter.", "Toys come alive."):
        assert part in text
    # Title first, description last.
    assert text.startswith("Toy Story (1995)") and text.endswith("Toys come alive.")


def test_item_text_does_not_repeat_a_year_the_title_already_has():
    text = build_item_text(title="Toy Story (1995)", year=1995)
    assert text.count("1995") == 1
    assert build_item_text(title="Heat", year=1995).count("1995") == 1


def test_item_text_without_attributes_is_only_the_title():
    assert build_item_text(title="Heat") == "Heat"
    assert build_item_text(title="  ") == "Untitled"
    # Empty attribute values are skipped, keys are sorted so the text does not depend on dict order.
    a = build_item_text(title="X", attributes={"zeta": "1", "alpha": "2", "empty": ""})
    b = build_item_text(title="X", attributes={"alpha": "2", "empty": "", "zeta": "1"})
    assert a == b
    assert "Empty" not in a
    assert a.index("Alpha: 2.") < a.index("Zeta: 1.")


def test_item_text_cuts_long_descriptions_at_a_word():
    words = ["word%03d" % n for n in range(200)]  # ~1600 characters
    description = " ".join(words)
    text = build_item_text(title="T", description=description)
    kept = text[len("T "):]
    assert kept.endswith("...")
    assert len(kept) <= MAX_DESCRIPTION_CHARS + 3
    body = kept[:-3]
    assert description.startswith(body)
    assert body.split(" ")[-1] in words  # cut at a word boundary, no half word
    short = build_item_text(title="T", description="short one")
    assert short == "T short one"


def test_item_text_keeps_at_most_ten_tags():
    tags = tuple(f"tag{n}" for n in range(15))
    text = build_item_text(title="T", tags=tags)
    assert "tag9" in text and "tag10" not in text


def test_item_text_of_equals_build_item_text():
    info = ItemInfo(title="Heat", categories=("Crime",), description="Cops and robbers.", year=1995,
                    tags=("heist",), attributes={"country": "US"})
    assert item_text_of(info) == build_item_text(title="Heat", categories=("Crime",),
                                                 description="Cops and robbers.", year=1995, tags=("heist",),
                                                 attributes={"country": "US"})


def test_describe_user():
    assert describe_user({"age": "24", "gender": "M", "occupation": "technician"}) == "A 24-year-old male technician."
    assert describe_user({"gender": "F"}) == "A female user."
    # MovieLens' "other"/"none" occupations describe nobody.
    assert describe_user({"age": "30", "occupation": "other"}) == "A 30-year-old user."
    assert describe_user({"age": "30", "occupation": "none"}) == "A 30-year-old user."
    assert describe_user(None) == "" and describe_user({}) == ""
    extra = describe_user({"occupation": "writer", "favourite_genre": "noir", "city": "Oslo"})
    assert extra == "A writer. city: Oslo; favourite genre: noir."
    # Empty values are ignored entirely.
    assert describe_user({"age": "", "gender": "", "occupation": "chef"}) == "A chef."


def _items(n: int) -> list[ItemInfo]:
    return [ItemInfo(title=f"Film {n_}", year=2000 + n_, categories=("Drama",)) for n_ in range(n)]


def test_profile_text_names_items_newest_first_and_at_most_max():
    newest_first = list(reversed(_items(MAX_PROFILE_ITEMS + 5)))
    text = profile_text_of(newest_first)
    labels = [item_label(info) for info in newest_first]
    positions = [text.find(label) for label in labels[:MAX_PROFILE_ITEMS]]
    assert all(p >= 0 for p in positions)
    assert positions == sorted(positions)  # the order given (newest first) is kept
    for label in labels[MAX_PROFILE_ITEMS:]:
        assert label not in text
    assert text.count("Film ") == MAX_PROFILE_ITEMS


def test_profile_text_parts_in_order_with_the_free_text_before_the_items():
    attrs = {"age": "24", "gender": "M", "occupation": "technician"}
    text = profile_text_of(_items(2), attributes=attrs, interest_tags=("noir", "jazz"),
                           free_text="  something with robots  ")
    assert text == ("A 24-year-old male technician. something with robots "
                    "Recently liked: Film 0 (2000) [Drama]; Film 1 (2001) [Drama]. Interests: noir, jazz.")
    assert text == profile_text_of(_items(2), attributes=attrs, interest_tags=("noir", "jazz"),
                                   free_text="  something with robots  ")


def test_a_requests_free_text_survives_the_fine_tuned_encoders_truncation():
    """Ten long labels pass the fine-tuned encoder's max length; the request's words must still be inside
    what the encoder reads."""
    from tokenizers import Tokenizer

    from lmrec.export.encoder_export import default_model_path
    from lmrec.export.finetune import FinetuneConfig

    tokenizer = Tokenizer.from_file(str(Path(default_model_path()) / "tokenizer.json"))
    long_items = [ItemInfo(title=f"The Extraordinary and Unbelievable Adventures of Character Number {n}, a Tale "
                                 "of Distant Lands (Part Two of the Saga)", year=1990 + n,
                           categories=("Adventure", "Comedy", "Science Fiction", "Fantasy"))
                  for n in range(MAX_PROFILE_ITEMS)]
    text = profile_text_of(long_items, attributes={"age": "24", "occupation": "writer"},
                           free_text="space opera with robots")
    tokenizer.no_truncation()
    max_length = FinetuneConfig().max_length  # also the served fine-tuned encoder's
    assert len(tokenizer.encode(text).ids) > max_length
    tokenizer.enable_truncation(max_length)
    assert "space opera with robots" in tokenizer.decode(tokenizer.encode(text).ids)


def test_profile_text_of_nothing_is_empty_and_free_text_only_is_the_text():
    assert profile_text_of([]) == ""
    assert profile_text_of([], free_text="   ") == ""
    assert profile_text_of([], free_text="cooking shows") == "cooking shows"


def test_build_user_profile_text_truncates_titles():
    titles = [f"T{n}" for n in range(MAX_PROFILE_ITEMS + 3)]
    text = build_user_profile_text(recent_item_titles=titles)
    assert text == "Recently liked: " + "; ".join(titles[:MAX_PROFILE_ITEMS]) + "."


def test_item_label():
    assert item_label(ItemInfo(title="Star Wars", year=1977,
                               categories=("Action", "Adventure", "Romance", "Sci-Fi", "War"))) == \
        "Star Wars (1977) [Action, Adventure, Romance, Sci-Fi, War]"  # not cut to the first three
    assert item_label(ItemInfo(title="Toy Story (1995)", year=1995, categories=("A",))) == "Toy Story (1995) [A]"
    assert item_label(ItemInfo(title="Heat", year=1995)) == "Heat (1995)"
    assert item_label(ItemInfo(title="")) == "Untitled"


def test_an_untitled_item_is_named_by_its_description_then_its_tags():
    """Profiles of a described but untitled catalogue must tell its items apart, not read 'Untitled [Drama]'."""
    described = ItemInfo(title=" ", description="A quiet drama about two sisters who run a lighthouse.",
                         categories=("Drama",))
    assert item_label(described) == "A quiet drama about two sisters who run... [Drama]"
    assert item_label(ItemInfo(title="", description="Short one.")) == "Short one."
    assert item_label(ItemInfo(title="", tags=("heist", " ", "noir", "1970s", "Paris"))) == "heist, noir, 1970s"
    assert "sisters" in profile_text_of([described])

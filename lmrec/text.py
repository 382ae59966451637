"""The one item-text builder and the one user-profile-text builder.

Training, export, evaluation and the gateway all call these, so what the encoder saw offline is what it
sees when serving. Keep them deterministic and free of dataset-specific branches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# How many of a user's most recent items the profile names: enough to describe taste, and mostly inside
# the encoders' 256 tokens (fine-tuned ones read 128 before: three in four ml-100k profiles lost items).
MAX_PROFILE_ITEMS = 10
MAX_DESCRIPTION_CHARS = 400
# Attribute keys rendered in a fixed order first (others follow sorted), so texts are stable.
_USER_ATTRIBUTE_ORDER = ("age", "gender", "occupation")
_GENDER_WORDS = {"M": "male", "F": "female"}
# Attributes that identify a place or a person rather than a taste: they only add noise to the text.
_UNDESCRIBED_ATTRIBUTES = frozenset({"zip", "zip_code", "zipcode", "postal_code", "email", "name"})


def build_item_text(
    *,
    title: str,
    categories: Sequence[str] = (),
    description: str = "",
    year: int | None = None,
    tags: Sequence[str] = (),
    attributes: Mapping[str, str] | None = None,
) -> str:
    """Text that describes one item, e.g. 'Toy Story (1995). Genres: Animation, Comedy. ...'."""
    parts = [title.strip() or "Untitled"]
    if year is not None and str(year) not in title:
        parts[0] += f" ({year})"
    if categories:
        parts.append("Genres: " + ", ".join(categories) + ".")
    if tags:
        parts.append("Tags: " + ", ".join(tags[:10]) + ".")
    for key in sorted(attributes or {}):
        value = (attributes or {})[key]
        if value:
            parts.append(f"{key.replace('_', ' ').capitalize()}: {value}.")
    if description:
        text = description.strip()
        if len(text) > MAX_DESCRIPTION_CHARS:
            text = text[:MAX_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "..."
        parts.append(text)
    return " ".join(parts)


def has_item_text(info) -> bool:
    """Whether an item has words of its own to encode: a title, a description or tags. Genres and
    attributes alone would give every item of a genre the same text."""
    return bool(info.title.strip() or info.description.strip() or any(tag.strip() for tag in info.tags))


def item_text_of(info) -> str:
    """`build_item_text` for an `ItemInfo` (or anything with the same fields)."""
    return build_item_text(
        title=info.title,
        categories=info.categories,
        description=info.description,
        year=info.year,
        tags=info.tags,
        attributes=info.attributes,
    )


def describe_user(attributes: Mapping[str, str] | None) -> str:
    """'A 24-year-old male technician.' from whatever attributes are known; '' when none are."""
    if not attributes:
        return ""
    attrs = {k: v for k, v in attributes.items() if v}
    words: list[str] = []
    if "age" in attrs:
        words.append(f"{attrs['age']}-year-old")
    if "gender" in attrs:
        words.append(_GENDER_WORDS.get(attrs["gender"], attrs["gender"]))
    occupation = attrs.get("occupation", "")
    # MovieLens says "other"/"none" when it does not know; that describes nobody.
    words.append(occupation if occupation and occupation not in ("other", "none") else "user")
    sentence = "A " + " ".join(words) + "."
    extras = [f"{k.replace('_', ' ')}: {attrs[k]}" for k in sorted(attrs)
              if k not in _USER_ATTRIBUTE_ORDER and k not in _UNDESCRIBED_ATTRIBUTES]
    if extras:
        sentence += " " + "; ".join(extras) + "."
    return sentence


def build_user_profile_text(
    *,
    recent_item_titles: Sequence[str] = (),
    attributes: Mapping[str, str] | None = None,
    interest_tags: Sequence[str] = (),
    free_text: str = "",
) -> str:
    """Profile text for a user: who they are, the free text, their recent items newest first, interests.

    `recent_item_titles` must already be newest first; only the first MAX_PROFILE_ITEMS are used.
    The free text (what a request asks for) comes before the items: the encoder truncates a long
    profile from its end, and ten item labels with attributes can pass its 256 tokens (three in four
    ml-100k profiles passed the 128 fine-tuned encoders read before), which cut the request's own words
    when they came last.
    Offline profiles have no free text, so this order leaves every trained text as it was.
    """
    parts = []
    about = describe_user(attributes)
    if about:
        parts.append(about)
    if free_text.strip():
        parts.append(free_text.strip())
    if recent_item_titles:
        parts.append("Recently liked: " + "; ".join(recent_item_titles[:MAX_PROFILE_ITEMS]) + ".")
    if interest_tags:
        parts.append("Interests: " + ", ".join(interest_tags) + ".")
    return " ".join(parts)


# Words of a description that name an item without a title (in profiles and explanations).
NAME_WORDS = 8


def item_name(info) -> str:
    """What to call an item: its title; without one, the start of its description, or its first tags.
    A catalogue of described but untitled items must not read 'Untitled' everywhere."""
    if info.title.strip():
        return info.title.strip()
    words = info.description.split()
    if words:
        return " ".join(words[:NAME_WORDS]) + ("..." if len(words) > NAME_WORDS else "")
    tags = [tag.strip() for tag in info.tags if tag.strip()]
    return ", ".join(tags[:3]) if tags else "Untitled"


def item_label(info) -> str:
    """Short label of an item inside a profile: 'Toy Story (1995) [Animation, Comedy]', with every category.
    The first three only was the rule before: MovieLens lists genres alphabetically, so 'Star Wars' lost
    Sci-Fi and War and its viewer's top interest tag read Romance."""
    label = item_name(info)
    if info.year is not None and str(info.year) not in label:
        label += f" ({info.year})"
    if info.categories:
        label += " [" + ", ".join(info.categories) + "]"
    return label


def profile_text_of(
    recent_items_newest_first: Sequence,
    *,
    attributes: Mapping[str, str] | None = None,
    interest_tags: Sequence[str] = (),
    free_text: str = "",
) -> str:
    """`build_user_profile_text` from `ItemInfo`s (newest first): the call offline and online share."""
    return build_user_profile_text(
        recent_item_titles=[item_label(info) for info in recent_items_newest_first[:MAX_PROFILE_ITEMS]],
        attributes=attributes,
        interest_tags=interest_tags,
        free_text=free_text,
    )

"""The CLI verbs that talk to a running gateway: one per RPC. Each builds a request and prints the answer.

recommend, similar, event, add-items, profile --address, forget, deploy, status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from lmrec.cli_types import gateway_address, int_in_range, positive_float, positive_int, utf8_text
from lmrec.text import has_item_text

DEFAULT_ADDRESS = "127.0.0.1:50051"


class CliError(Exception):
    """A usage problem, printed as one line naming the bad value."""


def gateway_address_of(address: str | None) -> str:
    """--address, else $LMREC_ADDRESS, else the default; a bad $LMREC_ADDRESS is named as such (argparse
    would blame --address, which was not given)."""
    if address is not None:
        return address
    address = os.environ.get("LMREC_ADDRESS", DEFAULT_ADDRESS)
    try:
        return gateway_address(address)
    except argparse.ArgumentTypeError as error:
        raise CliError(f"LMREC_ADDRESS={address!r}: {error}") from None


def _print_json(message) -> None:
    print(message_json(message))


def message_json(message) -> str:
    """`message` as JSON with every field, zeros and false included (a status with no events says
    `recordedEvents: "0"`, not nothing; 64-bit counts are strings, as protobuf's JSON mapping has them)."""
    import json

    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(message, including_default_value_fields=True)  # protobuf is pinned below 5
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _require_filters(pairs: list[str] | None) -> list[tuple[str, list[str]]]:
    """One filter per --require, all of which must hold (so `genre=Horror --require genre=Comedy` asks
    for both genres); the values of one --require are alternatives."""
    from lmrec.client.client import filter_from_text

    filters: list[tuple[str, list[str]]] = []
    for pair in pairs or []:
        try:
            filters.append(filter_from_text(pair))
        except ValueError as error:
            raise CliError(f"--require {error}") from None
    return filters


def _attributes(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--attribute {pair!r}: expected KEY=VALUE, e.g. occupation=student")
        out[key.strip()] = value.strip()
    return out


def cmd_recommend(args) -> int:
    from lmrec.client import RecommenderClient, format_items

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.recommend(args.user or "", recent_item_ids=args.item or (), text=args.text or "",
                                    k=args.k, include_seen=args.include_seen, attributes=_attributes(args.attribute),
                                    exclude_item_ids=args.exclude or (), require=_require_filters(args.require))
    if args.json:
        _print_json(response)
    else:
        if response.profile_text:
            print(f"profile: {response.profile_text}")
        print(format_items(response))
    if not response.items and args.require:  # an empty answer, not an error: say why, e.g. a misspelt value
        which = "item" if args.include_seen else "unseen item"
        print(f"no {which} matches every --require ({'; '.join(args.require)}): values are matched whole, "
              "ignoring case (genre=Sci-Fi, not SciFi)", file=sys.stderr)
        for note in response.notes:
            print(f"  {note}", file=sys.stderr)
    return 0


def cmd_similar(args) -> int:
    from lmrec.client import RecommenderClient, format_items

    if not args.item and not args.text:
        raise CliError("give --item ID or --text TEXT")
    if args.item and args.text:  # the request holds one of them
        raise CliError("give --item ID or --text TEXT, not both")
    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.similar(args.item or "", text=args.text or "", k=args.k)
    print(format_items(response))
    return 0


def cmd_event(args) -> int:
    from lmrec.client import RecommenderClient

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.record_event(args.user, args.item, event_type=args.type, timestamp=args.timestamp,
                                       weight=args.weight)
    print(f"recorded {response.recorded} event(s) (bundle {response.bundle_version})")
    return 0


def read_items_file(path: Path) -> list[dict]:
    """A JSON list or JSON Lines of items: {"item_id", "title", "categories", "description", "year", "tags",
    "attributes"}. Errors name the file, the line/position and the problem."""
    known = {"item_id", "title", "categories", "description", "year", "tags", "attributes"}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the JSON
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise CliError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8") from None
    if text.lstrip().startswith("["):
        where = "item"
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
        positions = list(range(1, len(items) + 1)) if isinstance(items, list) else []
        if not isinstance(items, list):
            raise CliError(f"{path}: expected a JSON list of items")
    else:
        where, items, positions = "line", [], []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                    positions.append(number)
                except json.JSONDecodeError as error:
                    raise CliError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    for position, item in zip(positions, items):
        if not isinstance(item, dict):
            raise CliError(f"{path}: {where} {position} is not an object")
        unknown = set(item) - known
        if unknown:
            raise CliError(f"{path}: {where} {position} has unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        if not str(item.get("item_id", "")).strip():
            raise CliError(f"{path}: {where} {position} needs a non-empty item_id")
        problem = _field_problem(item)
        if problem:
            raise CliError(f"{path}: {where} {position}: {problem}")
        tags = item.get("tags") or []
        if not has_item_text(SimpleNamespace(title=str(item.get("title", "")), description=str(item.get("description", "")),
                                             tags=[str(tag) for tag in ([tags] if isinstance(tags, str) else tags)])):
            raise CliError(f"{path}: {where} {position} has no text: give it a title, a description or tags")
    return items


YEAR_LIMIT = 2**31  # AddItems' year is an int32


def _field_problem(item: dict) -> str | None:
    """What is wrong with the type of one of `item`'s fields, or None."""
    for name in ("item_id", "title", "description"):
        if name in item and not isinstance(item[name], (str, int)) or isinstance(item.get(name), bool):
            return f"{name} must be a string, not {json.dumps(item[name])[:40]}"
    for name in ("categories", "tags"):
        value = item.get(name)
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list) and all(isinstance(v, (str, int)) for v in value)):
            return f"{name} must be a list of strings (or one string), not {json.dumps(value)[:40]}"
    year = item.get("year")
    if year is not None and not (isinstance(year, int) and not isinstance(year, bool)
                                 or isinstance(year, str) and year.strip().isdecimal()):
        return f"year must be a whole number, not {json.dumps(year)[:40]}"
    if year is not None and not -YEAR_LIMIT <= int(year) < YEAR_LIMIT:  # protobuf raised "Value out of range"
        return f"year {year} is out of range (the API's year is a 32-bit number)"
    attributes = item.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        return f"attributes must be an object of name: value, not {json.dumps(attributes)[:40]}"
    return None


def cmd_add_items(args) -> int:
    from lmrec.client import RecommenderClient

    items = read_items_file(Path(args.file))
    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.add_items(items)
    print(f"added {response.added}, replaced {response.replaced} item(s) (bundle {response.bundle_version})")
    return 0


def cmd_remote_profile(args) -> int:
    from lmrec.client import RecommenderClient

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        profile = client.profile(args.user, max_tags=args.tags)
    lines = [f"user {profile.user_id} (bundle {profile.bundle_version}, {profile.recorded_events} recorded events)",
             "interest tags: " + ", ".join(f"{t.tag} {t.weight:.2f}" for t in profile.tags),
             "recent items (newest first):"]
    lines += [f"  {item.item_id:>8}  {item.title}" for item in profile.recent_items]
    lines += ["profile text:", "  " + profile.profile_text]
    print("\n".join(lines))
    return 0


def cmd_forget(args) -> int:
    from lmrec.client import RecommenderClient

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.forget_user(args.user)
    known = "known" if response.was_known else "unknown"
    print(f"forgot user {args.user} ({known}); {response.events_deleted} recorded event(s) deleted")
    return 0


def cmd_deploy(args) -> int:
    from lmrec.client import RecommenderClient

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        response = client.deploy(args.version, timeout_s=args.timeout)
    if response.bundle_version == response.previous_version:
        print(f"already serving bundle {response.bundle_version}; nothing changed")
    else:
        print(f"serving bundle {response.bundle_version} (was {response.previous_version}); "
              f"switched in {response.seconds:.1f}s")
    return 0


def cmd_status(args) -> int:
    from lmrec.client import RecommenderClient, format_status

    with RecommenderClient(args.address, timeout_s=args.timeout) as client:
        status = client.status()
    if args.json:
        _print_json(status)
    else:
        print(format_status(status))
    return 0


positive_k = int_in_range(1, 1000, "k")


def add_client_verbs(verbs) -> None:
    def client_parser(name: str, helptext: str, runner, timeout: float = 10.0):
        p = verbs.add_parser(name, help=helptext)
        p.add_argument("--address", type=gateway_address, default=None,
                       help=f"gateway host:port (default: $LMREC_ADDRESS or {DEFAULT_ADDRESS})")
        p.add_argument("--timeout", type=positive_float, default=timeout, help="deadline in seconds")

        def run(args) -> int:
            args.address = gateway_address_of(args.address)
            return runner(args)

        p.set_defaults(run=run)
        return p

    p = client_parser("recommend", "ask the gateway for recommendations", cmd_recommend)
    p.add_argument("-k", type=positive_k, default=10)
    p.add_argument("--user", type=utf8_text, help="user id")
    p.add_argument("--item", action="append", type=utf8_text, help="a recent item id (repeatable), oldest first")
    p.add_argument("--text", type=utf8_text, help="free text")
    p.add_argument("--attribute", action="append", type=utf8_text, metavar="KEY=VALUE", help="a new user's attribute (repeatable)")
    p.add_argument("--exclude", action="append", type=utf8_text, metavar="ITEM", help="never return this item (repeatable)")
    p.add_argument("--require", action="append", type=utf8_text, metavar="KEY=VALUE[,VALUE]",
                   help="only items with one of these values, e.g. genre=Comedy (repeatable: all must hold)")
    p.add_argument("--include-seen", action="store_true")
    p.add_argument("--json", action="store_true", help="print the raw response as JSON")

    p = client_parser("similar", "ask the gateway for similar items", cmd_similar)
    p.add_argument("-k", type=positive_k, default=10)
    p.add_argument("--item", type=utf8_text, help="item id")
    p.add_argument("--text", type=utf8_text, help="free text")

    p = client_parser("event", "record one user event (stored durably before the answer)", cmd_event)
    p.add_argument("--user", type=utf8_text, required=True)
    p.add_argument("--item", type=utf8_text, required=True)
    p.add_argument("--type", type=utf8_text, default="", help="view, click, purchase, ... (default: interaction)")
    p.add_argument("--timestamp", type=float, default=0.0, help="seconds since the epoch (default: now)")
    p.add_argument("--weight", type=float, default=None, help="default 1; <= 0 marks seen but not liked")

    p = client_parser("add-items", "add items from a JSON / JSON Lines file to the live catalogue", cmd_add_items,
                      timeout=60.0)
    p.add_argument("file", help="JSON list or JSON Lines of {item_id, title, categories, description, year, tags, "
                                "attributes}")

    p = client_parser("forget", "delete a user's events, profile and cached vectors", cmd_forget)
    p.add_argument("--user", type=utf8_text, required=True)

    p = client_parser("deploy", "switch the gateway to bundle N (or back) without downtime", cmd_deploy,
                      timeout=300.0)
    p.add_argument("--version", type=positive_int, required=True)

    p = client_parser("status", "the serving bundle, available versions, catalogue and cache figures", cmd_status)
    p.add_argument("--json", action="store_true", help="the Admin.GetStatus message as JSON, for scripts")

"""Client frames of the Status API, checked in exactly the order SPEC 2.1 rule 2 gives.

Pure functions, no IO: the reader calls them one after the other and the first `ClientError` is the
answer, so the order of the checks is the order of the calls and unit tests pin it without a socket.
Frames the gateway sends (errors, `resume`, `init`) and the look at a published refresh's head are
spelled in `libs.wire.frames`, beside the refresh builder whose key order that look relies on.
"""

from __future__ import annotations

import json
from typing import Literal

import orjson

from libs.config import API_KEY_PATTERN
from libs.errors import ClientError

MAX_NESTING_LEVELS = 32  # SPEC 2.1 rule 1
MAX_SINCE = 2**53 - 1  # SPEC 2.1 rule 2
MAX_KEY_CHARS = 256  # SPEC 5.1 rule 10
CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMITED = 1008
CLOSE_UNAVAILABLE = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CONSUMER = 1013
REASON_SLOW_CONSUMER = "slow_consumer"
REASON_GOING_AWAY = "going_away"

Action = Literal["init", "refresh"]
Document = dict[str, object]


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _loads_strict(text: str) -> object:
    """orjson first (fast, strict); the stdlib only for what orjson refuses but RFC 8259 allows,
    such as 1e400 or a lone surrogate escape, so such a frame reaches the field checks."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ClientError("bad_json", "the message is not valid JSON") from None


def _nesting_levels(value: object) -> int:
    """Depth of arrays and objects, iteratively, so a hostile frame cannot exhaust the stack."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_NESTING_LEVELS:
            return deepest
        pending.extend((child, level + 1) for child in children)
    return deepest


def parse_frame(text: str | None) -> Document:
    """Row 2 of the checks: a binary frame (no text), invalid JSON, or JSON that is not an object
    is `bad_json` (SPEC 2.1 rules 1 and 2). Duplicate names: the last wins, as both parsers do."""
    if text is None:
        raise ClientError("bad_json", "binary frames are not accepted; send JSON text")
    document = _loads_strict(text)
    if not isinstance(document, dict):
        raise ClientError("bad_json", "the message must be a JSON object")
    if _nesting_levels(document) > MAX_NESTING_LEVELS:
        raise ClientError("bad_json", f"the message nests deeper than {MAX_NESTING_LEVELS} levels")
    return document


def check_action(document: Document) -> Action:
    """Row 3: `action` must be exactly `init` or `refresh`."""
    action = document.get("action")
    if action == "init" or action == "refresh":
        return action
    raise ClientError("unknown_action", 'action must be "init" or "refresh"')


def unauthorized(message: str) -> ClientError:
    """Every `unauthorized` closes with 4401 (SPEC 2.1 rule 4, section 5)."""
    return ClientError("unauthorized", message, CLOSE_UNAUTHORIZED)


def check_key_present(document: Document) -> str:
    """Row 4, the part SPEC 2.1 rule 2 lists before "not a configured key": `apiKey` missing,
    not a string, empty, or over 256 characters (refused without being hashed, 5.1 rule 10)."""
    api_key = document.get("apiKey")
    if not isinstance(api_key, str) or not api_key:
        raise unauthorized("apiKey is missing or not a string")
    if len(api_key) > MAX_KEY_CHARS:
        raise unauthorized("apiKey is not a configured key")
    return api_key


def key_could_be_configured(api_key: str) -> bool:
    """16 to 256 printable ASCII characters, no space (SPEC 2.1 rule 16): only such a key can be
    in the registry, and only such a key is hashed, which keeps non-ASCII text from the hash."""
    return API_KEY_PATTERN.fullmatch(api_key) is not None


def check_key_shape(document: Document) -> str:
    """Row 4 without Redis, as a key that can never be configured is `unauthorized` once the
    registry is known to exist. The reader asks the registry before it says so (rule 18:
    `unavailable` while there is none), so it calls the two parts itself."""
    api_key = check_key_present(document)
    if not key_could_be_configured(api_key):
        raise unauthorized("apiKey is not a configured key")
    return api_key


def check_resume_fields(document: Document) -> tuple[int | None, str | None]:
    """Row 5: `since` an integer in [0, 2^53-1] and `epoch` a string, when present. A JSON number
    with a fraction or exponent is not an integer (SPEC 2.1 rule 13), and neither is `true`."""
    since = document.get("since")
    epoch = document.get("epoch")
    if "since" in document and (
        not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= MAX_SINCE
    ):
        raise ClientError("bad_request", "since must be an integer from 0 to 2^53-1")
    if "epoch" in document and not isinstance(epoch, str):
        raise ClientError("bad_request", "epoch must be a string")
    return (since if isinstance(since, int) else None), (epoch if isinstance(epoch, str) else None)


def seq_of_entry_id(entry_id: str) -> int:
    """The refresh log's entry id is `<seq>-0` (libs/store/keys.py `refresh_log`)."""
    return int(entry_id.partition("-")[0])

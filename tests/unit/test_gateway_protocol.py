"""The gateway's pure checks: frame parsing in SPEC 2.1 rule 2's order, and the 5.1 limits."""

from __future__ import annotations

import pytest

from libs.errors import ClientError
from libs.wire.frames import error_frame, refresh_head, resume_frame
from libs.wire.status import ErrorMessage, ResumeMessage
from services.gateway.limits import FailedKeys, TokenBucket, TrustedProxies, client_address
from services.gateway.protocol import (
    check_action,
    check_key_shape,
    check_resume_fields,
    parse_frame,
)

KEY = "a-configured-looking-key"


def code_of(text: str | None) -> str:
    """The first failing check's code, or "ok"."""
    try:
        document = parse_frame(text)
        check_action(document)
        check_key_shape(document)
        check_resume_fields(document)
    except ClientError as error:
        return error.code
    return "ok"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (None, "bad_json"),
        ("", "bad_json"),
        ("{", "bad_json"),
        ("{} {}", "bad_json"),
        ('{"a":NaN}', "bad_json"),
        ('{"a":-Infinity}', "bad_json"),
        ("null", "bad_json"),
        ("[" * 32 + "]" * 32, "bad_json"),
        ("[" * 2000 + "]" * 2000, "bad_json"),
        ('{"a":' + "[" * 31 + "]" * 31 + "}", "unknown_action"),
        ('{"a":' + "[" * 32 + "]" * 32 + "}", "bad_json"),
        ('{"action":null}', "unknown_action"),
        ('{"action":"init "}', "unknown_action"),
        ('{"action":"init","apiKey":null}', "unauthorized"),
        ('{"action":"init","apiKey":""}', "unauthorized"),
        ('{"action":"init","apiKey":"short"}', "unauthorized"),
        ('{"action":"init","apiKey":"has a space in it"}', "unauthorized"),
        ('{"action":"init","apiKey":"' + "k" * 257 + '"}', "unauthorized"),
        ('{"action":"init","apiKey":"' + "k" * 256 + '"}', "ok"),
        (f'{{"action":"init","apiKey":"{KEY}","since":0}}', "ok"),
        (f'{{"action":"init","apiKey":"{KEY}","since":9007199254740991}}', "ok"),
        (f'{{"action":"init","apiKey":"{KEY}","since":9007199254740992}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":2.0}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":1e2}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":null}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":false}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":1e400}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","since":123456789012345678901234}}', "bad_request"),
        (f'{{"action":"init","apiKey":"{KEY}","epoch":null}}', "bad_request"),
        (f'{{"action":"refresh","apiKey":"{KEY}","epoch":"","since":4,"extra":{{}}}}', "ok"),
        # earlier rows win: a bad key is unauthorized even with a bad since
        ('{"action":"init","apiKey":1,"since":-1}', "unauthorized"),
        ('{"action":"nope","apiKey":1}', "unknown_action"),
    ],
)
def test_checks_run_in_spec_order(text: str | None, code: str) -> None:
    assert code_of(text) == code


def test_the_last_duplicate_name_wins() -> None:
    assert check_action(parse_frame('{"action":"nope","action":"refresh"}')) == "refresh"


def test_unauthorized_closes_4401_and_never_echoes_the_key() -> None:
    long_key = "k" * 300
    with pytest.raises(ClientError) as raised:
        check_key_shape({"apiKey": long_key})
    assert raised.value.close_code == 4401
    assert long_key not in raised.value.message


def test_error_and_resume_frames_match_the_wire_models() -> None:
    frame = error_frame("bad_json", "m" * 500)
    assert ErrorMessage.model_validate_json(frame).message == "m" * 200
    assert frame.startswith('{"action":"error","code":"bad_json","message":')
    assert ResumeMessage.model_validate_json(resume_frame(7, "00ff00ff00ff00ff")).seq == 7


def test_refresh_head_reads_seq_and_epoch_from_either_layout() -> None:
    fast = '{"action":"refresh","seq":12,"epoch":"0123456789abcdef","data":{}}'
    spaced = '{ "epoch": "E", "seq": 3, "action": "refresh", "data": {} }'
    assert refresh_head(fast) == (12, "0123456789abcdef")
    assert refresh_head(spaced) == (3, "E")
    assert refresh_head('{"action":"init","seq":1,"epoch":"E"}') is None
    assert refresh_head("not json") is None


def test_token_bucket_holds_20_and_refills_10_per_second() -> None:
    bucket = TokenBucket(20, 10.0, now_s=0.0)
    assert all(bucket.take(0.0) for _ in range(20))
    assert not bucket.take(0.0)
    assert bucket.take(0.1) and not bucket.take(0.1)
    assert sum(bucket.take(100.0) for _ in range(30)) == 20


def test_failed_keys_block_after_more_than_the_limit_within_60_s() -> None:
    failed = FailedKeys(limit=20)
    for second in range(20):
        failed.record("198.51.100.1", float(second))
    assert not failed.blocked("198.51.100.1", 20.0)
    failed.record("198.51.100.1", 20.0)
    assert failed.blocked("198.51.100.1", 20.0)
    assert not failed.blocked("198.51.100.2", 20.0)
    assert failed.blocked("198.51.100.1", 60.0)
    assert not failed.blocked("198.51.100.1", 60.5)  # the oldest of the 21 left the window
    failed.prune(81.0)
    assert not failed.blocked("198.51.100.1", 81.0)


def test_client_address_is_the_right_most_untrusted_forwarded_hop() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    forwarded = ["203.0.113.9, 198.51.100.4", "10.1.1.1"]
    assert client_address("10.0.0.2", forwarded, trusted) == "198.51.100.4"
    assert client_address("192.0.2.1", ["10.3.3.3"], trusted) == "10.3.3.3"
    assert client_address("192.0.2.1", [], trusted) == "192.0.2.1"
    assert client_address("203.0.113.50", forwarded, trusted) == "203.0.113.50"
    assert client_address("10.0.0.2", ["not-an-ip"], trusted) == "not-an-ip"

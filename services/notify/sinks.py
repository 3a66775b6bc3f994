"""Posting one delivery to one receiver: a signed webhook, or a Telegram chat through the Bot
API's `sendMessage` (SPEC 6.1 rules 3 and 4, issue 18). One attempt each: retries are the
sender's (`services.notify.sender`).

An attempt is delivered only by a 2xx within 5 s, the whole exchange included (httpx's own
timeouts are per phase: a receiver that trickles its answer could hold a sender for longer).
Redirects are not followed. Nothing a sink returns or logs holds the URL's query or a secret:
`Answer.detail` is built from the status and the error's class, scrubbed of both.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from libs.config import Webhook, public_url
from libs.wire.notifications import signed_headers, telegram_text
from services.notify.schedule import ATTEMPT_TIMEOUT_S

# httpx logs each request's whole URL at INFO, and httpcore its connections at DEBUG: a webhook's
# query or a Telegram token would reach the logs whatever LOG_LEVEL says (SPEC 6.1 rule 6)
for _chatty in ("httpx", "httpcore"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)

ANSWER_MAX_BYTES = 65_536  # what is read of an answer: the Bot API's JSON; a webhook's is dropped


@dataclass(frozen=True, slots=True)
class Answer:
    """How one attempt went. `reason` is a metric label: `ok`, `timeout`, `network` or
    `http_<status>`; `detail` is for logs and `bandwagon notify test`."""

    delivered: bool
    reason: str
    detail: str
    elapsed_s: float
    status: int | None = None
    retry_after_s: float | None = None


def new_ssl_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's CAs), made once: loading the CA bundle takes
    20-35 ms, which each webhook's own client would otherwise pay, on the event loop."""
    return httpx.create_ssl_context()


def new_client(ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """A client for one webhook: its one connection kept alive between deliveries. One client
    per webhook, not one for all: httpcore's pool checks every idle connection it holds on each
    request (a system call each), so a shared pool's cost grows with the number of webhooks,
    and a receiver that hangs holds nothing of another's."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(ATTEMPT_TIMEOUT_S),
        follow_redirects=False,
        verify=ssl_context or new_ssl_context(),
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
        headers={"User-Agent": "bandwagon-notify"},
    )


class Sink(Protocol):
    target: str
    """The receiver as logs may name it."""

    async def send(
        self, client: httpx.AsyncClient, *, delivery_id: str, body: bytes, now_ms: int
    ) -> Answer: ...


class _Scrubbed:
    """Removes the secrets an error message could carry: the URL with its query, and the key."""

    def __init__(self, url: str, secret: str) -> None:
        self.replacements = [(url, public_url(url)), (secret, "***")]

    def __call__(self, text: str) -> str:
        for secret, shown in self.replacements:
            text = text.replace(secret, shown)
        return text


async def _post(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    scrub: _Scrubbed,
    read_answer: bool,
) -> tuple[Answer, bytes]:
    started = time.monotonic()
    answer_body = b""
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
            async with client.stream("POST", url, content=content, headers=headers) as response:
                if read_answer:
                    async for chunk in response.aiter_bytes():
                        answer_body += chunk
                        if len(answer_body) >= ANSWER_MAX_BYTES:
                            break
    except (TimeoutError, httpx.TimeoutException):
        elapsed = time.monotonic() - started
        return Answer(False, "timeout", f"no answer within {ATTEMPT_TIMEOUT_S:g} s", elapsed), b""
    except (httpx.HTTPError, OSError) as error:
        detail = scrub(f"{type(error).__name__}: {error}")
        return Answer(False, "network", detail, time.monotonic() - started), b""
    except (httpx.InvalidURL, ValueError) as error:  # checked at start (`url_problem`)
        detail = scrub(f"{type(error).__name__}: {error}")
        return Answer(False, "invalid_url", detail, time.monotonic() - started), b""
    elapsed = time.monotonic() - started
    status = response.status_code
    detail = f"{status} {response.reason_phrase}".strip()
    if 300 <= status < 400:
        detail += " (redirects are not followed)"
    delivered = 200 <= status < 300
    reason = "ok" if delivered else f"http_{status}"
    return Answer(delivered, reason, detail, elapsed, status=status), answer_body


class WebhookSink:
    """POST the exact body bytes, signed with the webhook's secret (SPEC 6.1 rule 3)."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.target = public_url(url)
        self._scrub = _Scrubbed(url, secret)

    async def send(
        self, client: httpx.AsyncClient, *, delivery_id: str, body: bytes, now_ms: int
    ) -> Answer:
        headers = signed_headers(delivery=delivery_id, body=body, secret=self.secret, now_ms=now_ms)
        # the answer is read (up to a bound) so that the connection can carry the next one
        answer, _ = await _post(
            client, self.url, content=body, headers=headers, scrub=self._scrub, read_answer=True
        )
        return answer


class TelegramSink:
    """`sendMessage` of the delivery's human text to one chat. A 429 carries the wait the Bot
    API asks for (`parameters.retry_after`, seconds), which the sender honours."""

    def __init__(self, api_url: str, token: str, chat_id: int | str) -> None:
        self.url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.target = f"telegram chat {chat_id}"
        self._scrub = _Scrubbed(self.url, token)

    async def send(
        self, client: httpx.AsyncClient, *, delivery_id: str, body: bytes, now_ms: int
    ) -> Answer:
        message = {
            "chat_id": self.chat_id,
            "text": telegram_text(orjson.loads(body)),
            "disable_web_page_preview": True,
        }
        answer, answer_body = await _post(
            client,
            self.url,
            content=orjson.dumps(message),
            headers={"Content-Type": "application/json"},
            scrub=self._scrub,
            read_answer=True,
        )
        if answer.status == 429:
            retry_after = _retry_after_s(answer_body)
            if retry_after is not None:
                return Answer(
                    False,
                    answer.reason,
                    f"{answer.detail}, retry after {retry_after:g} s",
                    answer.elapsed_s,
                    status=429,
                    retry_after_s=retry_after,
                )
        return answer


def _retry_after_s(answer_body: bytes) -> float | None:
    """The Bot API's `{"ok": false, "parameters": {"retry_after": N}}`, when well formed."""
    try:
        answer: Any = orjson.loads(answer_body)
        value = answer["parameters"]["retry_after"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86_400:
        return None
    return float(value)


def url_problem(url: str) -> str | None:
    """Why httpx would refuse `url` at every attempt, or None. The bots file's own checks are
    looser (an IPv4 address out of range, an IDNA label Python's codec refuses): the notify
    worker refuses such a webhook at its start rather than retry it for 24 h."""
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as error:  # IDNA errors are UnicodeErrors
        return f"httpx cannot send to it ({type(error).__name__}: {error})"
    return None


def sink_for(hook: Webhook, secret: str, telegram_api_url: str) -> Sink:
    if hook.telegram is not None:
        return TelegramSink(telegram_api_url, secret, hook.telegram.chat_id)
    assert hook.url is not None  # validated: a webhook has a url or a telegram chat
    return WebhookSink(hook.url, secret)

"""One JSON object per log line, with the same context keys everywhere and never a secret.

Every module logs through `logging.getLogger(__name__)`, so a line's `logger` is the module that
wrote it (`services.gateway.hub`), and a level is set per package (`services.gateway`)."""

from __future__ import annotations

import logging
import sys
import time

import orjson

CONTEXT_KEYS = (
    "service",
    "bot",
    "symbol",
    "stream",
    "entry_id",
    "update_time_ms",
    "order_id",
    "source",
    "line",
    "field",
    "value",
    "reason",
    "webhook",
    "delivery",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    old_factory = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.service = service
        return record

    logging.setLogRecordFactory(factory)
    # httpx logs every request's whole URL at INFO: a webhook's query string or a Telegram
    # token would reach the logs (SPEC 6.1 rule 6)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Logging: human text or one JSON object per line (python-json-logger), and the one-line-per-call access log.

The access log records what an operator needs to follow a call (method, request id, status, reason,
bytes, timings) and nothing a caller sent in confidence: no image bytes, no tokens, no metadata.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

from pythonjsonlogger.json import JsonFormatter

access_log = logging.getLogger("enrich.access")


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


@dataclass
class CallRecord:
    """One RPC as the access log sees it; streams add up their items."""

    method: str
    request_id: str = ""
    code: str = "OK"
    reason: str = ""
    bytes_in: int = 0
    items: int = 0
    failed_items: dict[str, int] = field(default_factory=dict)
    decode_ms: float = 0.0
    queue_ms: float = 0.0
    model_ms: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def count_item(self, reason: str = "") -> None:
        self.items += 1
        if reason:
            self.failed_items[reason] = self.failed_items.get(reason, 0) + 1

    def add_timings(self, timings) -> None:
        """Sums a response's enrich.v1.Timings; the model's share of a batch counts once per item."""
        self.decode_ms += timings.decode_ms
        self.queue_ms += timings.queue_ms
        self.model_ms += timings.encoder_ms + timings.heads_ms + timings.caption_ms

    def fail(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason

    def write(self) -> None:
        total_ms = (time.perf_counter() - self.started) * 1000
        fields = {"method": self.method, "request_id": self.request_id, "code": self.code, "reason": self.reason,
                  "bytes": self.bytes_in, "items": self.items, "failed_items": self.failed_items,
                  "decode_ms": round(self.decode_ms, 2), "queue_ms": round(self.queue_ms, 2),
                  "model_ms": round(self.model_ms, 2), "total_ms": round(total_ms, 2)}
        shown = {**fields, "request_id": printable(self.request_id)}  # JSON escapes by itself; text must too
        summary = " ".join(f"{key}={value}" for key, value in shown.items() if value not in ("", {}, None))
        access_log.info(summary, extra=fields)


def printable(text: str) -> str:
    """Client-chosen text as one log line: control characters escaped, so it cannot forge lines."""
    return text.encode("unicode_escape").decode("ascii")[:200]

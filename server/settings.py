"""`enrich serve`'s settings: one dataclass, filled from flags (and environment variables for deployment)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from enrich_model.decode import DEFAULT_MAX_PIXELS


@dataclass
class ServerSettings:
    model: Path
    host: str = "[::]"
    port: int = 50051
    max_message_mb: float = 32.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_size: int = 8
    max_delay_ms: float = 5.0
    decode_workers: int = 2
    stream_in_flight: int = 32
    torch_threads: int = 0  # 0 = torch's default
    caption_beams: int = 3
    device: str = "auto"
    grace_seconds: float = 20.0

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    defaults = ServerSettings(model=Path("."))
    parser = argparse.ArgumentParser(prog="enrich serve", description="Serve a model bundle over gRPC.")
    parser.add_argument("--model", type=Path, required=True, help="bundle directory written by `enrich train`")
    parser.add_argument("--host", default=os.environ.get("ENRICH_HOST", defaults.host))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ENRICH_PORT", defaults.port)),
                        help="0 picks a free port")
    parser.add_argument("--max-message-mb", type=float, default=defaults.max_message_mb,
                        help="largest request/response (default 32 MiB; gRPC's own default is 4)")
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--max-delay-ms", type=float, default=defaults.max_delay_ms,
                        help="how long a batch waits to fill up")
    parser.add_argument("--decode-workers", type=int, default=defaults.decode_workers)
    parser.add_argument("--stream-in-flight", type=int, default=defaults.stream_in_flight,
                        help="requests read ahead per stream")
    parser.add_argument("--torch-threads", type=int, default=defaults.torch_threads)
    parser.add_argument("--caption-beams", type=int, default=defaults.caption_beams)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--grace-seconds", type=float, default=defaults.grace_seconds)
    args = parser.parse_args(argv)
    return ServerSettings(**{k.replace("-", "_"): v for k, v in vars(args).items()})

"""`enrich serve`'s settings: one dataclass, filled from flags, with environment variables for deployment."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from enrich_model.decode import DEFAULT_MAX_JPEG_PIXELS, DEFAULT_MAX_PIXELS, DecodeLimits

MESSAGE_OVERHEAD = 1024 * 1024  # request fields besides the image: ids and options are tiny


@dataclass
class ServerSettings:
    model: Path
    host: str = "[::]"
    port: int = 50051
    max_image_mb: float = 64.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_jpeg_pixels: int = DEFAULT_MAX_JPEG_PIXELS
    max_batch_size: int = 8
    max_delay_ms: float = 5.0
    encoder_wait_ms: float = 100.0
    max_queue: int = 128
    caption_batch_size: int = 32
    stream_in_flight: int = 32
    threads: int = 0  # CPU budget; 0 = this process's CPU limit (cgroup quota, affinity)
    model_threads: int = 0  # 0 = the whole budget
    decode_threads: int = 0  # 0 = the whole budget
    caption_beams: int = 3
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    compile: bool = False
    cache_mb: float = 64.0
    metrics_port: int = 9464  # -1 = no metrics endpoint; 0 = a free port
    http_port: int = 8080  # HTTP/JSON beside gRPC; -1 = none; 0 = a free port
    health_port: int = -1  # plaintext grpc.health.v1 only, for probes when --port has TLS; -1 = none
    grace_seconds: float = 20.0
    max_connection_age_seconds: float = 0.0  # 0 = connections live as long as clients keep them
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens_file: Path | None = None
    auth_tokens: str = field(default="", repr=False)  # comma-separated, from ENRICH_AUTH_TOKENS only
    reflection: bool = True
    log_format: str = "text"

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 1024 * 1024)

    @property
    def max_message_bytes(self) -> int:
        """gRPC's own limit sits above the image limit so that an oversized image gets our reason."""
        return self.max_image_bytes + MESSAGE_OVERHEAD

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_image_pixels, self.max_jpeg_pixels)

    @property
    def thread_budget(self) -> tuple[int, int]:
        """(model threads, decode threads). Both default to the whole budget: on catalogue images the model is
        most of the work, on camera originals decoding is, and whichever is the wall gets every core. On 2
        cores (model/decode threads) 2/2 served 54 catalogue and 22.5 camera img/s, 1/2 41 and 22, 2/1 50
        and 19."""
        from enrich_model.backends import cpu_budget

        budget = self.threads or cpu_budget()
        return self.model_threads or budget, self.decode_threads or budget


def env(name: str, default: object = None) -> object:
    return os.environ.get(f"ENRICH_{name}", default)


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    defaults = ServerSettings(model=Path("."))
    parser = argparse.ArgumentParser(
        prog="enrich serve", description="Serve a model bundle over gRPC.",
        epilog="Every flag marked [env NAME] can also be set by that environment variable.")
    parser.add_argument("--model", type=Path, default=env("MODEL"), help="bundle directory written by "
                        "`enrich train` [env ENRICH_MODEL]")
    parser.add_argument("--host", default=env("HOST", defaults.host), help="[env ENRICH_HOST]")
    parser.add_argument("--port", type=int, default=int(env("PORT", defaults.port)),
                        help="0 picks a free port [env ENRICH_PORT]")

    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-image-mb", type=float, default=defaults.max_image_mb,
                        help="largest encoded image (default 64 MiB; gRPC's own default is 4)")
    limits.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels,
                        help="most pixels decoded per image, from the header (default 100 MP)")
    limits.add_argument("--max-jpeg-pixels", type=int, default=defaults.max_jpeg_pixels,
                        help="largest JPEG original; it decodes at reduced scale (default 400 MP)")
    limits.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="images in flight server-wide before unary calls get OVERLOADED")
    limits.add_argument("--stream-in-flight", type=int, default=defaults.stream_in_flight,
                        help="requests read ahead per stream")
    limits.add_argument("--grace-seconds", type=float, default=float(env("GRACE_SECONDS", defaults.grace_seconds)),
                        help="on SIGTERM, how long accepted work may take to finish (keep the pod's "
                             "terminationGracePeriodSeconds above it) [env ENRICH_GRACE_SECONDS]")

    limits.add_argument("--max-connection-age-seconds", type=float,
                        default=float(env("MAX_CONNECTION_AGE_SECONDS", defaults.max_connection_age_seconds)),
                        help="close a client connection this old (its calls get --grace-seconds more), so that "
                             "clients resolve the service again and spread over pods added since; 0 = never "
                             "[env ENRICH_MAX_CONNECTION_AGE_SECONDS]")

    model = parser.add_argument_group("model")
    model.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    model.add_argument("--max-delay-ms", type=float, default=defaults.max_delay_ms,
                       help="how long a batch waits to fill up")
    model.add_argument("--encoder-wait-ms", type=float, default=defaults.encoder_wait_ms,
                       help="while admitted images are still being decoded, a partial batch waits up to this "
                            "long for them (fuller batches cost less CPU per image; 0 = never wait)")
    model.add_argument("--caption-batch-size", type=int, default=defaults.caption_batch_size,
                       help="most captions generated together (the caption stage batches on its own)")
    model.add_argument("--caption-beams", type=int, default=defaults.caption_beams)
    model.add_argument("--device", default=env("DEVICE", defaults.device),
                       help="auto, cpu, cuda, cuda:1, ... [env ENRICH_DEVICE]")
    model.add_argument("--backend", choices=("auto", "torch", "openvino"), default=env("BACKEND", defaults.backend),
                       help="the encoder's inference backend; auto = OpenVINO on CPU when installed, else "
                            "torch [env ENRICH_BACKEND]")
    model.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                       default=env("PRECISION", defaults.precision),
                       help="auto = bf16/fp16 where the hardware has it, else fp32 (exact) [env ENRICH_PRECISION]")
    model.add_argument("--compile", action="store_true",
                       default=str(env("COMPILE", "0")).lower() in ("1", "true", "yes", "on"),
                       help="torch backend: torch.compile the encoder (for GPUs; minutes at start-up) "
                            "[env ENRICH_COMPILE=1]")
    model.add_argument("--threads", type=int, default=int(env("THREADS", defaults.threads)),
                       help="CPU threads budget; 0 = the process's CPU limit (cgroup quota), not the host's "
                            "count [env ENRICH_THREADS]")
    model.add_argument("--model-threads", type=int, default=defaults.model_threads,
                       help="threads for the model (0 = the budget)")
    model.add_argument("--decode-threads", type=int, default=defaults.decode_threads,
                       help="threads decoding images (0 = the budget)")
    model.add_argument("--cache-mb", type=float, default=float(env("CACHE_MB", defaults.cache_mb)),
                       help="response cache, keyed by image bytes, options and model (0 = off) [env ENRICH_CACHE_MB]")
    parser.add_argument("--http-port", type=int, default=int(env("HTTP_PORT", defaults.http_port)),
                        help="HTTP/JSON API beside gRPC: curl -T photo.jpg http://HOST:PORT/v1/enrich "
                             "(-1 = off, 0 = a free port) [env ENRICH_HTTP_PORT]")
    parser.add_argument("--health-port", type=int, default=int(env("HEALTH_PORT", defaults.health_port)),
                        help="grpc.health.v1 alone on a plaintext port, for probes that cannot speak TLS "
                             "(kubelet's gRPC probe, docker HEALTHCHECK); -1 = none [env ENRICH_HEALTH_PORT]")
    parser.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", defaults.metrics_port)),
                        help="Prometheus /metrics over plain HTTP (-1 = off, 0 = a free port) "
                             "[env ENRICH_METRICS_PORT]")

    security = parser.add_argument_group("security")
    security.add_argument("--tls-cert", type=Path, default=env("TLS_CERT"),
                          help="PEM certificate chain: serve TLS [env ENRICH_TLS_CERT]")
    security.add_argument("--tls-key", type=Path, default=env("TLS_KEY"),
                          help="PEM private key for --tls-cert [env ENRICH_TLS_KEY]")
    security.add_argument("--tls-client-ca", type=Path, default=env("TLS_CLIENT_CA"),
                          help="PEM CA bundle: require client certificates it signed (mutual TLS) "
                               "[env ENRICH_TLS_CLIENT_CA]")
    security.add_argument("--auth-tokens-file", type=Path, default=env("AUTH_TOKENS_FILE"),
                          help="file of accepted bearer tokens, one per line: the Enrich methods then "
                               "require `authorization: Bearer <token>` [env ENRICH_AUTH_TOKENS_FILE]")
    security.add_argument("--no-reflection", dest="reflection", action="store_false",
                          default=str(env("REFLECTION", "1")).lower() not in ("0", "false", "no", "off"),
                          help="do not advertise the API through server reflection [env ENRICH_REFLECTION=0]")
    parser.add_argument("--log-format", choices=("text", "json"), default=env("LOG_FORMAT", defaults.log_format),
                        help="json: one JSON object per line, one line per call [env ENRICH_LOG_FORMAT]")
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("--model is required (or set ENRICH_MODEL)")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    values = {k.replace("-", "_"): v for k, v in vars(args).items()}
    values["auth_tokens"] = os.environ.get("ENRICH_AUTH_TOKENS", "")  # never a flag: it would show in `ps`
    return ServerSettings(**values)

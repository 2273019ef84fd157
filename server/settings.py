"""`enrich serve`'s settings, declared once: every field is a flag, an environment variable (ENRICH_ and the
field's name in capitals), a default, its choices and its help. `enrich serve --help` lists them with their
defaults; the README's table is `python -m enrich_server.settings` (a test keeps the two equal).

Light on purpose (no grpc, no torch): `--help` and a wrong argument answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from enrich_model.decode import DEFAULT_MAX_JPEG_PIXELS, DEFAULT_MAX_PIXELS, DecodeLimits
from enrich_model.options import RuntimeOptions, add_options, from_arguments, markdown_table, option

GROUPS = ("general", "ports", "model", "limits", "security")  # as --help and the README list them
MESSAGE_OVERHEAD = 1024 * 1024  # request fields besides the image: ids and options are tiny
MESSAGE_LIMIT_FACTOR = 2  # gRPC reads requests up to this many times the image limit, to refuse them in words


@dataclass
class ServerSettings(RuntimeOptions):
    model: Path | None = option(None, "bundle directory written by `enrich train` (required)", group="general",
                                shown_default="required")
    host: str = option("[::]", "address the ports listen on ([::]: every interface)", group="general")
    port: int = option(50051, "gRPC port (0: a free one)", group="ports")
    http_port: int = option(8080, "HTTP/JSON API beside gRPC: curl -T photo.jpg http://HOST:PORT/v1/enrich "
                            "(-1: off, 0: a free port)", group="ports")
    health_port: int = option(-1, "grpc.health.v1 alone on a plain-text port, for probes that speak no TLS "
                              "(kubelet's gRPC probe, docker HEALTHCHECK) (-1: off)", group="ports")
    metrics_port: int = option(9464, "Prometheus /metrics over plain HTTP (-1: off, 0: a free port)", group="ports")

    max_image_mb: float = option(64.0, "largest encoded image, in MiB (gRPC's own default is 4)", group="limits")
    max_image_pixels: int = option(DEFAULT_MAX_PIXELS, "most pixels decoded per image, read from the header",
                                   group="limits")
    max_jpeg_pixels: int = option(DEFAULT_MAX_JPEG_PIXELS, "largest JPEG original; it decodes at reduced scale, "
                                  "which must fit --max-image-pixels", group="limits")
    max_queue: int = option(128, "images in flight server-wide before unary calls get OVERLOADED (streams wait)",
                            group="limits")
    stream_in_flight: int = option(32, "requests read ahead per stream", group="limits")
    http_timeout_seconds: float = option(60.0, "deadline of an HTTP call that sends no Grpc-Timeout header "
                                         "(0: none)", group="limits")
    grace_seconds: float = option(20.0, "on SIGTERM, how long accepted work may take to finish (keep the pod's "
                                  "terminationGracePeriodSeconds above it)", group="limits")
    max_connection_age_seconds: float = option(0.0, "close a client connection this old (its calls get "
                                               "--grace-seconds more), so that clients resolve the service again "
                                               "and spread over pods added since (0: never)", group="limits")

    model_threads: int = option(0, "threads for the model", group="model", shown_default="the CPU budget")
    decode_threads: int = option(0, "threads decoding images", group="model", shown_default="the CPU budget")
    max_batch_size: int = option(8, "most images in one encoder pass", group="model")
    max_delay_ms: float = option(5.0, "how long a batch waits to fill up", group="model")
    encoder_wait_ms: float = option(100.0, "while admitted images are still being decoded, a partial batch waits up "
                                    "to this long for them (fuller batches cost less CPU per image; 0: never)",
                                    group="model")
    caption_batch_size: int = option(32, "most captions generated together (the caption stage batches on its "
                                     "own)", group="model")
    cache_mb: float = option(64.0, "response cache, keyed by the image's bytes, the options and the model, in MiB "
                             "(0: off)", group="model")

    tls_cert: Path | None = option(None, "PEM certificate chain: serve TLS (with --tls-key)", group="security")
    tls_key: Path | None = option(None, "PEM private key of --tls-cert", group="security")
    tls_client_ca: Path | None = option(None, "PEM CA bundle: require client certificates it signed (mutual TLS)",
                                        group="security")
    auth_tokens_file: Path | None = option(None, "file of accepted bearer tokens, one per line: the Enrich methods "
                                           "then require `authorization: Bearer <token>`", group="security")
    auth_tokens: str = option("", "accepted bearer tokens, comma-separated (environment only: a flag would show "
                              "in `ps`)", group="security", flag=False)
    reflection: bool = option(True, "advertise the API through server reflection (grpcurl list/describe)",
                              group="security")
    log_format: str = option("text", "text, or json: one JSON object per line, one line per call",
                             group="general", choices=("text", "json"))
    ready_file: Path | None = option(None, "once SERVING, write this JSON file: the bound ports, the model "
                                     "version and the process id (for scripts that start a server on free ports)",
                                     group="general")

    def __repr__(self) -> str:  # never the tokens
        return f"ServerSettings(model={self.model}, port={self.port})"

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 1024 * 1024)

    @property
    def max_message_bytes(self) -> int:
        """gRPC's own limit sits well above the image limit, so that an oversized image is read and refused with
        our reason; beyond it gRPC's transport refuses the message itself, before the server sees it."""
        return MESSAGE_LIMIT_FACTOR * self.max_image_bytes + MESSAGE_OVERHEAD

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_image_pixels, self.max_jpeg_pixels)

    @property
    def thread_budget(self) -> tuple[int, int]:
        """(model threads, decode threads). Both default to the whole budget: on catalogue images the model is
        most of the work, on camera originals decoding is, and whichever is the wall gets every core."""
        from enrich_model.backends import cpu_budget

        budget = self.threads or cpu_budget()
        return self.model_threads or budget, self.decode_threads or budget


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enrich serve", description="Serve a model bundle over gRPC, with HTTP/JSON, health and metrics "
        "beside it.", epilog="Every flag can also be set by the environment variable named with it; a flag wins.")
    add_options(parser, ServerSettings, environ, GROUPS)
    return parser


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerSettings:
    parser = build_parser(environ)
    settings = from_arguments(ServerSettings, parser.parse_args(argv))
    if settings.model is None:
        parser.error("--model is required (or set ENRICH_MODEL)")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if settings.tls_client_ca and not settings.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    return settings


if __name__ == "__main__":  # the README's table of settings
    sys.stdout.write(markdown_table(ServerSettings, GROUPS) + "\n")

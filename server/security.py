"""TLS, mutual TLS and bearer tokens. Health stays open (probes and balancers carry no token).

Tokens are compared in constant time against every accepted token (no early exit that would tell an
attacker how close a guess was) and are never logged.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from .errors import EnrichFailure, token_invalid
from .settings import ServerSettings

PROTECTED_PREFIX = "/enrich.v1.Enrich/"


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mutual TLS when a client CA is too."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    pair = (read_pem(settings.tls_key, "--tls-key"), read_pem(settings.tls_cert, "--tls-cert"))
    client_ca = read_pem(settings.tls_client_ca, "--tls-client-ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def http_ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The HTTP port's TLS, from the same files as gRPC's: a client CA means client certificates required."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def read_pem(path: Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise OSError(f"{flag} {path}: {error.strerror or error}") from error
    if b"-----BEGIN" not in data:
        raise OSError(f"{flag} {path}: not a PEM file")
    return data


def accepted_tokens(settings: ServerSettings) -> list[bytes]:
    """Tokens from --auth-tokens-file (one per line, # comments) and ENRICH_AUTH_TOKENS (comma-separated)."""
    tokens = [t.strip() for t in settings.auth_tokens.split(",")]
    if settings.auth_tokens_file:
        try:
            lines = Path(settings.auth_tokens_file).read_text().splitlines()
        except OSError as error:
            raise OSError(f"--auth-tokens-file {settings.auth_tokens_file}: {error.strerror or error}") from error
        tokens += [line.strip() for line in lines if not line.lstrip().startswith("#")]
    return [t.encode() for t in tokens if t]


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on the Enrich methods; anything else passes through.
    `on_refused(method, failure)` hears of every refusal (the service logs and counts it)."""

    def __init__(self, tokens: list[bytes],
                 on_refused: Callable[[str, EnrichFailure], object] = lambda method, failure: None) -> None:
        if not tokens:
            raise ValueError("no tokens given")
        self.tokens, self.on_refused = tokens, on_refused

    def authorised(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        candidate = token.strip().encode() if scheme.lower() == "bearer" else b""
        matches = [hmac.compare_digest(candidate, accepted) for accepted in self.tokens]  # all, always
        return bool(candidate) and any(matches)

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable],
                                details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED_PREFIX):
            return handler
        header = dict(details.invocation_metadata or ()).get("authorization")
        if self.authorised(header):
            return handler
        failure = token_invalid(present=header is not None)

        async def refuse(_request, context: grpc.aio.ServicerContext) -> None:
            self.on_refused(details.method.rsplit("/", 1)[-1], failure)  # the method and reason: never the header
            await failure.abort(context)

        if handler.request_streaming and handler.response_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            make = grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            make = grpc.unary_stream_rpc_method_handler
        else:
            make = grpc.unary_unary_rpc_method_handler
        return make(refuse, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

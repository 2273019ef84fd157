"""HTTP/JSON beside gRPC, in the same process and event loop, through the same service (admission, cache,
batched stages, deadlines, access log): `curl -T photo.jpg http://HOST:8080/v1/enrich`.

    POST|PUT /v1/enrich   body: the image bytes (raw, or the first file of a multipart form), options as
                          query parameters (top_k, caption_mode, request_id, the include_* flags, and an
                          audit's catalogue.<column>=value and catalogue.error_prior); or an EnrichRequest
                          as JSON (image in base64), as gRPC-JSON transcoders send it
    GET /v1/model         ModelInfo
    GET /healthz          {"status": "SERVING"} with 200, or 503 while loading or draining

Answers use protobuf's JSON mapping (enrich_contract.wire), and the proto's google.api.http routes, so
Envoy's transcoder or grpc-gateway give the same URLs and bodies. Every error, an unknown path included, is a
google.rpc.Status as JSON with an HTTP status from its gRPC code (and the same ErrorInfo reason as over gRPC
where the service gave one), plus Retry-After when waiting helps. A call's deadline is its `Grpc-Timeout`
header (as grpc-gateway reads it), else --http-timeout-seconds; a client that disconnects cancels its call.

aiohttp serves it: a maintained asyncio HTTP server that runs inside the gRPC server's own loop (no second
thread or process, one batcher) and leaves signal handling to the gRPC server.
"""

from __future__ import annotations

import json
import logging
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping

import grpc
from aiohttp import BodyPartReader, web
from google.protobuf import json_format
from google.rpc import status_pb2

from enrich.v1 import enrich_pb2
from enrich_contract.wire import INCLUDE_FLAGS, caption_mode, request_from_json, to_json
from enrich_model.options import parse_bool

from .errors import EnrichFailure, image_too_many_bytes, request_invalid, token_invalid
from .security import BearerTokenAuth
from .service import EnrichService

log = logging.getLogger("enrich.http")

METHOD = "HTTP"
HTTP_STATUS = {  # as grpc-gateway maps gRPC codes
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
CATALOGUE_PREFIX = "catalogue."
ROUTES = "POST or PUT /v1/enrich, GET /v1/model, GET /healthz"
GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def error_response(failure: EnrichFailure) -> web.Response:
    body = json_format.MessageToDict(failure.status())
    http_status = 413 if failure.reason == enrich_pb2.IMAGE_TOO_LARGE else HTTP_STATUS.get(failure.code, 500)
    headers = {"Retry-After": str(math.ceil(failure.retry_after))} if failure.retry_after else {}
    return web.json_response(body, status=http_status, headers=headers)


def plain_error(http_status: int, code: grpc.StatusCode, message: str) -> web.Response:
    """An error of the HTTP layer itself (no such path, a method a path does not take): no reason to give."""
    status = status_pb2.Status(code=code.value[0], message=message)
    return web.json_response(json_format.MessageToDict(status), status=http_status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return plain_error(404, grpc.StatusCode.NOT_FOUND, f"no such path: {request.path}; the API has {ROUTES}")
    except web.HTTPMethodNotAllowed as refused:
        return plain_error(405, grpc.StatusCode.UNIMPLEMENTED, f"{request.method} is not allowed on {request.path}; "
                           f"use {' or '.join(sorted(refused.allowed_methods))}")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return plain_error(error.status, grpc.StatusCode.UNKNOWN, error.reason)
    except Exception:  # a bug: the client still gets JSON, the log the traceback
        log.exception("HTTP %s %s failed", request.method, request.path)
        return plain_error(500, grpc.StatusCode.INTERNAL, "internal server error; the server log has the details")


def call_deadline(request: web.Request, default_seconds: float) -> float | None:
    """The call's deadline as a time.perf_counter() value: its Grpc-Timeout header, else the default."""
    header = request.headers.get("Grpc-Timeout")
    if header is None:
        return time.perf_counter() + default_seconds if default_seconds > 0 else None
    matched = GRPC_TIMEOUT.match(header.strip())
    if not matched:
        raise request_invalid(f"Grpc-Timeout {header!r} is not a timeout such as 5S, 500m or 1M "
                              "(at most 8 digits, then H, M, S, m, u or n)")
    return time.perf_counter() + int(matched.group(1)) * TIMEOUT_UNITS[matched.group(2)]


async def request_message(request: web.Request) -> enrich_pb2.EnrichRequest:
    """The body as an EnrichRequest: JSON (a transcoder's form), a multipart form's file, or raw bytes.
    Raises EnrichFailure (REQUEST_INVALID) in words."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError as error:
            raise request_invalid(f"the JSON body is not valid JSON: {error.msg} at line {error.lineno}, column "
                                  f"{error.colno}") from None
        try:
            return request_from_json(body)
        except ValueError as error:
            raise request_invalid(str(error)) from error
    if request.content_type.startswith("multipart/"):
        try:
            image = await multipart_file(request)
        except (ValueError, KeyError, AssertionError) as error:  # aiohttp's ways of saying the form is malformed
            raise request_invalid("the multipart form cannot be read: its boundary is missing or does not match "
                                  "the body, or a part is damaged") from error
    else:
        image = await request.read()
    return query_request(image, request.query)


def query_request(image: bytes, query: Mapping[str, str]) -> enrich_pb2.EnrichRequest:
    """The raw-bytes form's options from the query: top_k, caption_mode, request_id, include_embedding,
    include_palette, include_signature, and an audit's catalogue.<column>=value and catalogue.error_prior."""
    message = enrich_pb2.EnrichRequest(image=image, request_id=query.get("request_id", ""))
    prior = f"{CATALOGUE_PREFIX}error_prior"
    for name, value in query.items():
        if name.startswith(CATALOGUE_PREFIX) and name != prior:
            message.catalogue.values[name.removeprefix(CATALOGUE_PREFIX)] = value
    if "top_k" in query:
        message.top_k = query_number(query, "top_k", int)
    if prior in query:
        message.catalogue.error_prior = query_number(query, prior, float)
    try:
        message.caption_mode = caption_mode(query.get("caption_mode"))
        for flag in INCLUDE_FLAGS:
            setattr(message, flag, parse_bool(query.get(flag, "false")))
    except ValueError as error:
        raise request_invalid(str(error)) from error
    return message


def query_number(query: Mapping[str, str], name: str, parse: type[int] | type[float]) -> int | float:
    """A number from the query; raises EnrichFailure (REQUEST_INVALID) in words."""
    try:
        return parse(query[name])
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise request_invalid(f"{name} must be {kind}, not {query[name]!r}") from None


async def multipart_file(request: web.Request) -> bytes:
    async for part in await request.multipart():
        if isinstance(part, BodyPartReader) and (part.filename is not None or part.name in ("image", "file")):
            return bytes(await part.read())
    raise request_invalid("the multipart form has no file part (name it `image`)")


class HttpApi:
    def __init__(self, service: EnrichService, auth: BearerTokenAuth | None, max_image_bytes: int,
                 timeout_seconds: float = 60.0, ssl_context: ssl.SSLContext | None = None,
                 shutdown_seconds: float = 10.0) -> None:
        self.service, self.auth, self.max_image_bytes = service, auth, max_image_bytes
        self.timeout_seconds, self.ssl_context, self.shutdown_seconds = timeout_seconds, ssl_context, shutdown_seconds
        # A JSON body carries the image in base64 (4/3 larger); larger bodies get IMAGE_TOO_LARGE as JSON.
        self.app = web.Application(client_max_size=max_image_bytes * 4 // 3 + 1024 * 1024, middlewares=[json_errors])
        self.app.add_routes([web.post("/v1/enrich", self.enrich), web.put("/v1/enrich", self.enrich),
                             web.get("/v1/model", self.model), web.get("/healthz", self.health)])
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        """Listens; returns the bound port (a free one for 0)."""
        # handler_cancellation: a client that goes away cancels its call, as over gRPC.
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.shutdown_seconds,
                                    handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") if host not in ("[::]", "::") else None, port,
                           ssl_context=self.ssl_context)
        await site.start()
        return self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    def _refused(self, request: web.Request) -> EnrichFailure | None:
        """The gRPC port's rule: with tokens configured, `Authorization: Bearer <token>` (health stays open)."""
        header = request.headers.get("Authorization")
        if self.auth is None or self.auth.authorised(header):
            return None
        return self.service.refuse(METHOD, token_invalid(present=header is not None))

    async def enrich(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return error_response(refused)
        try:
            message = await request_message(request)
            deadline = call_deadline(request, self.timeout_seconds)
        except web.HTTPRequestEntityTooLarge:
            failure = image_too_many_bytes(request.content_length or 0, self.max_image_bytes)
            return error_response(self.service.refuse(METHOD, failure, request.query.get("request_id", "")))
        except EnrichFailure as failure:
            return error_response(self.service.refuse(METHOD, failure, request.query.get("request_id", "")))
        try:
            response = await self.service.enrich(METHOD, message, deadline)
        except EnrichFailure as failure:
            return error_response(failure)
        return web.json_response(to_json(response))

    async def model(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return error_response(refused)
        try:
            return web.json_response(to_json(self.service.model_info(METHOD)))
        except EnrichFailure as failure:
            return error_response(failure)

    async def health(self, request: web.Request) -> web.Response:
        serving = self.service.serving
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)

"""HTTP/JSON beside gRPC, in the same process, on the same event loop, through the same admission and
batcher: `curl -T photo.jpg http://HOST:8080/v1/enrich`.

    POST|PUT /v1/enrich   body: the image bytes (raw, or the first file of a multipart form), options as
                          query parameters (top_k, caption_mode, request_id); or an EnrichRequest as
                          JSON (image in base64), as gRPC-JSON transcoders send it
    GET /v1/model         ModelInfo
    GET /healthz          {"status": "SERVING"} with 200, or 503 while loading or draining

Answers use protobuf's JSON mapping (the proto's google.api.http routes, so Envoy's transcoder or
grpc-gateway give the same URLs and bodies). Errors are a google.rpc.Status as JSON, with the same
ErrorInfo reason as over gRPC, an HTTP status from the gRPC code, and Retry-After when waiting helps.

aiohttp serves it: a maintained asyncio HTTP server that runs inside the gRPC server's own loop (no
second thread or process, one batcher) and leaves signal handling to the gRPC server.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Callable

import grpc
from aiohttp import BodyPartReader, web
from google.protobuf import json_format

from enrich.v1 import enrich_pb2

from .errors import EnrichFailure, image_too_many_bytes, internal_error, model_loading, token_invalid
from .logs import printable
from .security import BearerTokenAuth
from .servicer import EnrichServicer

log = logging.getLogger("enrich.http")

HTTP_STATUS = {  # as grpc-gateway maps gRPC codes
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
CAPTION_NAMES = {name.removeprefix("CAPTION_MODE_").lower(): value
                 for name, value in enrich_pb2.CaptionMode.items() if value}


def to_json(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def error_response(failure: EnrichFailure) -> web.Response:
    body = json_format.MessageToDict(failure.status())
    http_status = 413 if failure.reason == enrich_pb2.IMAGE_TOO_LARGE else HTTP_STATUS.get(failure.code, 500)
    headers = {"Retry-After": str(math.ceil(failure.retry_after))} if failure.retry_after else {}
    return web.json_response(body, status=http_status, headers=headers)


def bad_request(message: str) -> web.Response:
    return web.json_response({"code": grpc.StatusCode.INVALID_ARGUMENT.value[0], "message": message}, status=400)


class HttpApi:
    def __init__(self, servicer: EnrichServicer, serving: Callable[[], bool], auth: BearerTokenAuth | None,
                 max_image_bytes: int, ssl_context: ssl.SSLContext | None = None,
                 shutdown_seconds: float = 10.0) -> None:
        self.servicer, self.serving, self.auth = servicer, serving, auth
        self.ssl_context, self.shutdown_seconds = ssl_context, shutdown_seconds
        self.max_image_bytes = max_image_bytes
        # A JSON body carries the image in base64 (4/3 larger); larger bodies get IMAGE_TOO_LARGE as JSON.
        self.app = web.Application(client_max_size=max_image_bytes * 4 // 3 + 1024 * 1024)
        self.app.add_routes([web.post("/v1/enrich", self.enrich), web.put("/v1/enrich", self.enrich),
                             web.get("/v1/model", self.model), web.get("/healthz", self.health)])
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.shutdown_seconds)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]") if host not in ("[::]", "::") else None, port,
                           ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the bound port, for port 0
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _authorised(self, request: web.Request) -> EnrichFailure | None:
        """The gRPC port's rule: with tokens configured, `Authorization: Bearer <token>` (health stays open)."""
        header = request.headers.get("Authorization")
        if self.auth is None or self.auth.authorised(header):
            return None
        return token_invalid(present=header is not None)

    async def enrich(self, request: web.Request) -> web.Response:
        if (refused := self._authorised(request)) is not None:
            return error_response(refused)
        try:
            message = await self._request_message(request)
        except ValueError as error:
            return bad_request(str(error))
        except web.HTTPRequestEntityTooLarge:
            return error_response(image_too_many_bytes(request.content_length or 0, self.max_image_bytes))
        started = time.perf_counter()
        try:
            with self.servicer.active():  # counted like a gRPC call: shutdown waits for it
                response = await self.servicer.enrich_one(message, None)
        except EnrichFailure as failure:
            self.servicer.metrics.count_item("HTTP", failure.code.name, failure.reason_name)
            return error_response(failure)
        except Exception:
            log.exception("HTTP enrich %s failed", printable(message.request_id) or "(no request id)")
            failure = internal_error()
            self.servicer.metrics.count_item("HTTP", failure.code.name, failure.reason_name)
            return error_response(failure)
        self.servicer.metrics.count_item("HTTP", "OK")
        log.debug("HTTP enrich %s in %.1f ms", printable(message.request_id), (time.perf_counter() - started) * 1000)
        return web.json_response(to_json(response))

    async def _request_message(self, request: web.Request) -> enrich_pb2.EnrichRequest:
        """The body as an EnrichRequest: JSON (a transcoder's form), a multipart form's file, or raw bytes."""
        content_type = request.content_type
        if content_type == "application/json":
            try:
                return json_format.Parse(await request.text(), enrich_pb2.EnrichRequest())
            except json_format.ParseError as error:
                raise ValueError(f"the JSON body is not an EnrichRequest: {error}") from error
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader) and (part.filename is not None or part.name in ("image", "file")):
                    image = bytes(await part.read())
                    break
            else:
                raise ValueError("the multipart form has no file part (name it `image`)")
        else:
            image = await request.read()
        message = enrich_pb2.EnrichRequest(image=image, request_id=request.query.get("request_id", ""))
        if "top_k" in request.query:
            try:
                message.top_k = int(request.query["top_k"])
            except ValueError as error:
                raise ValueError(f"top_k must be a whole number, not {request.query['top_k']!r}") from error
        if "caption_mode" in request.query:
            name = request.query["caption_mode"].lower().removeprefix("caption_mode_")
            if name not in CAPTION_NAMES:
                raise ValueError(f"caption_mode must be one of {', '.join(CAPTION_NAMES)}")
            message.caption_mode = CAPTION_NAMES[name]
        return message

    async def model(self, request: web.Request) -> web.Response:
        if (refused := self._authorised(request)) is not None:
            return error_response(refused)
        if not self.servicer.slot.ready:
            return error_response(model_loading())
        return web.json_response(to_json(self.servicer.model_info()))

    async def health(self, request: web.Request) -> web.Response:
        serving = self.serving()
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)

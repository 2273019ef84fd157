"""Failures with reasons: one exception type for every error the API reports, and how it goes on the wire.

A stream item carries it as `ItemStatus` (code, message, reason, metadata, retry_delay); a unary call as
its status plus rich details (google.rpc.ErrorInfo with the reason, google.rpc.RetryInfo) in the
`grpc-status-details-bin` trailer, written by grpcio-status.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from enrich.v1 import enrich_pb2
from enrich_model.decode import DecodeFailure, ImageDecodeError

DOMAIN = "enrich.v1"
DECODE_CODES = {
    DecodeFailure.EMPTY: grpc.StatusCode.INVALID_ARGUMENT,
    DecodeFailure.UNDECODABLE: grpc.StatusCode.INVALID_ARGUMENT,
    DecodeFailure.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class EnrichFailure(Exception):
    """Why one image (or one call) failed: a status code, a reason code can branch on, words for people."""

    def __init__(self, code: grpc.StatusCode, reason: int, message: str, metadata: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.metadata = metadata or {}
        self.retry_after = retry_after

    @property
    def reason_name(self) -> str:
        return enrich_pb2.ErrorReason.Name(self.reason)

    @classmethod
    def from_decode(cls, error: ImageDecodeError) -> EnrichFailure:
        return cls(DECODE_CODES[error.reason], enrich_pb2.ErrorReason.Value(error.reason.value), error.message,
                   error.details)

    def retry_delay(self) -> duration_pb2.Duration | None:
        if self.retry_after is None:
            return None
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after * 1000)))
        return delay

    def item_status(self) -> enrich_pb2.ItemStatus:
        return enrich_pb2.ItemStatus(code=self.code.value[0], message=self.message, reason=self.reason,
                                     metadata=self.metadata, retry_delay=self.retry_delay())

    def status(self) -> status_pb2.Status:
        """As google.rpc.Status: the code, the words, ErrorInfo with the reason, and RetryInfo when given."""
        details = [pack(error_details_pb2.ErrorInfo(reason=self.reason_name, domain=DOMAIN, metadata=self.metadata))]
        if (delay := self.retry_delay()) is not None:
            details.append(pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def rich_status(self) -> grpc.Status:
        return rpc_status.to_status(self.status())

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        status = self.rich_status()
        trailing = tuple(status.trailing_metadata)
        # gRPC's own retry policy (clients' service config) honours this: retry after our hint, and never
        # an image over a limit (RESOURCE_EXHAUSTED like OVERLOADED, but retrying cannot fix it).
        if self.retry_after is not None:
            trailing += (("grpc-retry-pushback-ms", str(round(self.retry_after * 1000))),)
        elif self.reason == enrich_pb2.IMAGE_TOO_LARGE:
            trailing += (("grpc-retry-pushback-ms", "-1"),)
        await context.abort(status.code, status.details, trailing)


def pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def model_loading(retry_after: float = 2.0) -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.UNAVAILABLE, enrich_pb2.MODEL_LOADING,
                         "the model is still loading; retry shortly", retry_after=retry_after)


def shutting_down() -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.UNAVAILABLE, enrich_pb2.SHUTTING_DOWN,
                         "the server is shutting down and takes no new images; send this one to another replica")


def deadline_expired() -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.DEADLINE_EXCEEDED, enrich_pb2.DEADLINE_EXPIRED,
                         "the call's deadline passed before the image reached the model")


def image_too_many_bytes(seen: int, limit: int) -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, enrich_pb2.IMAGE_TOO_LARGE,
                         f"the image is {seen:,} bytes, over the limit of {limit:,} bytes",
                         {"limit": "max_image_bytes", "limit_value": str(limit), "seen": str(seen)})


def overloaded(in_flight: int, capacity: int, retry_after: float) -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, enrich_pb2.OVERLOADED,
                         f"the server is at capacity ({in_flight} of {capacity} images in flight); retry after "
                         f"{retry_after:.2f} s, ideally on another replica",
                         {"in_flight": str(in_flight), "capacity": str(capacity)}, retry_after=retry_after)


def prediction_failed(error: Exception) -> EnrichFailure:
    kind = "out of memory" if isinstance(error, MemoryError) or "out of memory" in str(error) else "model error"
    return EnrichFailure(grpc.StatusCode.INTERNAL, enrich_pb2.PREDICTION_FAILED,
                         f"the model failed on this image's batch ({kind}); retrying may work")


def internal_error() -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.INTERNAL, enrich_pb2.INTERNAL_ERROR,
                         "internal server error; the server log has the details")


def request_invalid(message: str) -> EnrichFailure:
    return EnrichFailure(grpc.StatusCode.INVALID_ARGUMENT, enrich_pb2.REQUEST_INVALID, message)


def token_invalid(present: bool) -> EnrichFailure:
    words = "the bearer token is not one this server accepts" if present else (
        "this server requires a bearer token: send `authorization: Bearer <token>` metadata")
    return EnrichFailure(grpc.StatusCode.UNAUTHENTICATED, enrich_pb2.TOKEN_INVALID, words)


CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(code: int) -> str:
    """A status code number as its name ("INVALID_ARGUMENT"), as stream items carry numbers."""
    return CODE_NAMES.get(code, str(code))

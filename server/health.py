"""grpc.health.v1 with List, and Watch streams that end when the server has drained.

The asyncio servicer from grpcio-health-checking implements Check and Watch only, and its Watch streams
never end by themselves: a client watching health would hold a draining server for its whole grace
period. close_watches() ends them (status OK) once the server's own work is done.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio


class EnrichHealth(aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus] = {}
        self._watches: set[asyncio.Task] = set()
        self._closing = self._shutting_down = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        if not self._shutting_down:  # as the base class: once shutting down, NOT_SERVING for good
            self.statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._shutting_down = True
        self.statuses = dict.fromkeys(self.statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(self, request: health_pb2.HealthListRequest,
                   context: grpc.aio.ServicerContext) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(statuses={
            service: health_pb2.HealthCheckResponse(status=status) for service, status in self.statuses.items()
        })

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        if self._closing:
            await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING))
            return
        watching = asyncio.ensure_future(super().Watch(request, context))
        self._watches.add(watching)
        try:
            await asyncio.wait({watching})  # not cancelled by close_watches(); grpc cancels *this* task
        finally:
            watching.cancel()
            self._watches.discard(watching)

    def close_watches(self) -> None:
        self._closing = True
        for watching in list(self._watches):
            watching.cancel()

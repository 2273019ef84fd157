"""Admission: a bound on the images in flight server-wide, from accepted to answered.

Unary calls that find it full are refused at once (the caller retries later or elsewhere); streams wait
for room, which stops them reading, so HTTP/2 flow control slows the sender instead of failing it.
Waiters are served first come, first served, and a unary call never jumps ahead of a waiting stream.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Admission:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a place (streams, while the server is full)."""
        return sum(not waiter.done() for waiter in self._waiters)

    @property
    def full(self) -> bool:
        return self.in_flight >= self.capacity or bool(self._waiters)

    def try_admit(self) -> bool:
        if self.full:
            return False
        self.in_flight += 1
        return True

    async def admit(self) -> None:
        if not self.full:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its place over: in_flight already counts us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a place just as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

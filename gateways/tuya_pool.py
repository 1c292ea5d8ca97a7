"""Several Tuya clients side by side, so that one meter's hanging answer holds back no other meter.

TuyaMeterGateway keeps one signed session and lets one request through at a time (the client is not
thread-safe). This gateway keeps `clients` of them (lanes), each with its own session and token, and
gives every request a free lane. Which meter may be charged when is not decided here: the database
allows one `sending` top-up per meter.
"""

from __future__ import annotations

import asyncio
import queue
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateways.tuya import TuyaMeterGateway
from gateways.tuya_errors import TuyaTransientError

_sized_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class PooledTuyaGateway(TuyaMeterGateway):
    def __init__(self, endpoint: str, access_id: str, access_secret: str, *, clients: int = 8, **options: Any) -> None:
        super().__init__(endpoint, access_id, access_secret, **options)
        self.clients = max(1, clients)
        self._lanes = [TuyaMeterGateway(endpoint, access_id, access_secret, **options) for _ in range(self.clients)]
        self._free: queue.SimpleQueue[TuyaMeterGateway] = queue.SimpleQueue()
        for lane in self._lanes:
            self._free.put(lane)

    def __repr__(self) -> str:
        return f"PooledTuyaGateway({self._endpoint!r}, access_id={self._access_id!r}, clients={self.clients})"

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **options: Any) -> Any:
        _enough_threads(asyncio.get_running_loop(), self.clients)
        return await super()._call(method, path, body, **options)

    def _locked_exchange(self, method: str, path: str, body: dict[str, Any] | None, guard, *extra: Any) -> Any:
        try:
            lane = self._free.get(timeout=self.deadline_s)
        except queue.Empty:
            raise TuyaTransientError("every Tuya client is busy") from None
        try:
            return lane._locked_exchange(method, path, body, guard, *extra)
        finally:
            self._free.put(lane)


def _enough_threads(loop: asyncio.AbstractEventLoop, clients: int) -> None:
    """The client is blocking and runs in the loop's default executor (min(32, cores + 4) threads):
    give it one thread per lane, plus the usual few, once per loop."""
    if loop in _sized_loops:
        return
    _sized_loops.add(loop)
    loop.set_default_executor(ThreadPoolExecutor(max_workers=clients + 4, thread_name_prefix="lipameter-io"))

"""The engine's runtime: one event loop thread, one decode pool, one tile loader.

Started on first use and rebuilt in a forked child (the parent's threads do
not exist there, and obstore's stores are not fork-safe), so an engine made
before ``fork`` works in the child. Store registries (one per set of store
options) live here too, because they hold connection pools.

Concurrency policy: every public method may be called from any thread; one
lock guards starting and stopping. Coroutines given to :meth:`Runtime.submit`
run on the loop thread; decoding and assembly run in the priority pool.

At interpreter exit every runtime still running is closed (an :mod:`atexit`
hook): its tasks are cancelled and its loop stopped before the interpreter
finalises, so no store call of a loop left running settles into a finalising
interpreter (which aborts the process; ``catalog._quiesce`` then waits for the
calls just cancelled).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from catalog import AccessPolicy, StoreRegistry
from cogflight_core import EngineSettings

from ._cache import TileCache
from ._pool import PriorityExecutor
from ._tiles import TileLoader

__all__ = ["Loop", "Runtime"]

T = TypeVar("T")

# Runtimes whose loop runs now, closed at exit (weakly held: a dropped engine is not kept).
_RUNNING: weakref.WeakSet[Runtime] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Loop:
    """A started runtime: its event loop, loop thread, decode pool and tile loader."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    executor: PriorityExecutor
    loader: TileLoader

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the loop; the future settles when it does."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


class Runtime:
    """Threads and shared I/O state of one engine (started lazily, restartable)."""

    def __init__(
        self,
        cache: TileCache,
        settings: EngineSettings,
        *,
        max_retries: int,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.max_retries = max_retries
        self.policy = policy
        self.chips = 0  # chips delivered, counted on the loop thread
        self.batch_numbers = itertools.count(1)  # 0: work outside any batch, first
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._started: Loop | None = None
        self._registries: dict[tuple[Any, ...], StoreRegistry] = {}

    @property
    def started(self) -> Loop | None:
        """The running loop, or None before the first request (and after close)."""
        return self._started

    def ensure(self) -> Loop:
        """The running loop, starting it (or, in a forked child, a fresh one) first."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._started is None:
                self._started = self._start()
                _RUNNING.add(self)
            return self._started

    def _after_fork(self) -> None:
        # The parent's threads, loop and stores do not exist here; the lock may have
        # been held by one of those threads at fork time, so it is replaced too.
        self._lock = threading.Lock()
        self._started = None
        self._registries = {}
        self._pid = os.getpid()
        _RUNNING.discard(self)

    def _start(self) -> Loop:
        loop = asyncio.new_event_loop()
        s = self.settings
        executor = PriorityExecutor(s.decode_threads, thread_name_prefix="cogflight-decode")
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="cogflight-engine", daemon=True)
        thread.start()
        started.wait()

        async def make_loader() -> TileLoader:  # its semaphore belongs to this loop
            return TileLoader(
                cache=self.cache,
                executor=executor,
                max_requests=s.max_requests,
                coalesce_bytes=s.coalesce_bytes,
                max_run_bytes=s.max_run_bytes,
                max_retries=self.max_retries,
                policy=self.policy,
            )

        loader = asyncio.run_coroutine_threadsafe(make_loader(), loop).result()
        return Loop(loop, thread, executor, loader)

    def registry(self, options: Mapping[str, Any]) -> StoreRegistry:
        """The store registry for one set of store options (shared by every request)."""
        key = tuple(sorted((k, str(v)) for k, v in options.items()))
        with self._lock:
            reg = self._registries.get(key)
            if reg is None:
                reg = self._registries[key] = StoreRegistry(dict(options))  # type: ignore[arg-type]
            return reg

    def close(self) -> None:
        """Cancel what runs on the loop, stop its thread and the decode pool."""
        if self._pid != os.getpid():  # a parent's loop: its threads do not exist here
            self._after_fork()
            return
        with self._lock:
            started, self._started = self._started, None
        _RUNNING.discard(self)
        if started is None:
            return
        loop = started.loop
        if loop.is_running():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
            with contextlib.suppress(Exception):  # HTTP connections, on their loop
                asyncio.run_coroutine_threadsafe(started.loader.aclose(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
        started.thread.join(timeout=10)
        if not started.thread.is_alive():
            loop.close()
        started.executor.shutdown(wait=False, cancel_futures=True)


def _close_all_at_exit() -> None:
    """Close every runtime still running (registered after ``catalog``'s exit hook: runs first)."""
    for runtime in list(_RUNNING):
        runtime.close()


atexit.register(_close_all_at_exit)


async def _cancel_all() -> None:
    """Cancel every other task of the running loop and let them finish unwinding."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

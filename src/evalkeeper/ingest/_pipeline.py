"""Run an iterator in a background thread, a few items ahead of its consumer.

Importers use it where the producing side releases the GIL (DuckDB's JSON reader, zstd decompression,
CRC) so that it overlaps with the consumer's Python work and with the store compressing and writing the
previous batch. Errors raised while producing are re-raised in the consumer, at the item where they
happened; closing the consumer early (an error downstream) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def in_background(items: Iterator[T], *, depth: int = 1, name: str = "evalkeeper-reader",
                  on_close: Callable[[], None] | None = None) -> Generator[T, None, None]:
    """Yield what `items` yields, computed in a thread that stays at most `depth` items ahead.

    `on_close` runs when the consumer stops before the end (for instance to interrupt a running query);
    the thread is joined before this generator finishes, so nothing outlives it.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = q.get()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            yield item
    finally:
        stop.set()
        if not finished and on_close is not None and thread.is_alive():
            try:
                on_close()
            except Exception:  # noqa: BLE001, S110 - best effort; the thread stops at its next item anyway
                pass
        thread.join()

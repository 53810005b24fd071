"""Importing the provider SDKs without the garbage collector's help.

pulumi_cloudflare declares every type of the Cloudflare API: importing it
leaves some 400,000 objects that live as long as the program. Collecting
garbage while they are made, and scanning them again in every later full
collection, costs about a second of each `pulumi preview` (README,
"Performance"). `paused_collector()` imports with the collector paused, then
freezes what was made out of its reach: once per process (the tests run the
program many times in one process, and their garbage must stay collectable).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


_done = False


@contextmanager
def paused_collector() -> Iterator[None]:
    global _done
    if _done:
        yield
        return
    _done = True
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()

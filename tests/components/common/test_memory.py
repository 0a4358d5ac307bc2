"""Freed memory goes back to the system between components."""

from __future__ import annotations

import psutil

from components.common.memory import release_freed_memory


def test_freed_heap_pages_are_returned():
    process = psutil.Process()
    blocks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]  # ~200 MB on glibc's heap
    kept = blocks[::100]  # a survivor every 100 blocks: the heap cannot shrink from its top
    del blocks
    before = process.memory_info().rss
    release_freed_memory()
    returned = before - process.memory_info().rss
    assert returned > 100e6, f"only {returned / 1e6:.0f} MB returned"
    assert len(kept) == 2_000

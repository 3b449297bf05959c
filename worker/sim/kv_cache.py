"""Paged KV cache with a prefix cache, as one replica of the simulated engine sees it.

Blocks of ``block_size`` tokens are either free, held privately by one request, or cached: a
full prompt block registered under the hash of its token prefix, shared by every request whose
prompt starts with the same tokens. Cached blocks no request holds stay resident and are evicted
least-recently-used when free blocks run out (vLLM's prefix caching; SGLang's radix cache is the
same idea at token granularity, which the simulator approximates with 16-token pages).

Not thread-safe: one replica's scheduler owns it.
"""

from __future__ import annotations

from collections import OrderedDict


class KVCache:
    """Block accounting: ``available`` = free blocks + evictable cached blocks."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.free = num_blocks
        self._refs: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self.hit_tokens = 0
        self.queried_tokens = 0

    @property
    def available(self) -> int:
        return self.free + len(self._evictable)

    @property
    def used(self) -> int:
        """Blocks held by running requests (cached-but-idle blocks count as free)."""
        return self.num_blocks - self.available

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def match(self, hashes: tuple[int, ...]) -> int:
        """Number of leading prompt blocks already cached."""
        if not self.prefix_caching:
            return 0
        count = 0
        for h in hashes:
            if h not in self._refs:
                break
            count += 1
        return count

    def idle_count(self, hashes: tuple[int, ...]) -> int:
        """How many of these cached blocks no request holds (they count as available)."""
        return sum(1 for h in hashes if self._refs.get(h) == 0)

    def acquire(self, hashes: tuple[int, ...]) -> None:
        """Take a reference on cached blocks (all must be cached: call ``match`` first)."""
        for h in hashes:
            refs = self._refs[h]
            if refs == 0:
                del self._evictable[h]
            self._refs[h] = refs + 1

    def allocate(self, blocks: int) -> bool:
        """Take ``blocks`` private blocks, evicting idle cached ones if needed."""
        if blocks > self.available:
            return False
        short = blocks - self.free
        for _ in range(max(short, 0)):
            h, _ = self._evictable.popitem(last=False)
            del self._refs[h]
            self.free += 1
        self.free -= blocks
        return True

    def commit(self, h: int) -> bool:
        """Turn one private, now full, prompt block into a cached block under hash ``h``.

        Returns False (block stays private) when caching is off or the hash is already cached
        by another request that computed the same prefix concurrently.
        """
        if not self.prefix_caching or h in self._refs:
            return False
        self._refs[h] = 1
        return True

    def release(self, private_blocks: int, hashes: list[int]) -> None:
        """Give back a request's private blocks and its references on cached blocks."""
        self.free += private_blocks
        # Tail blocks first: the LRU then evicts a prefix from its end, keeping the shared head
        # reachable (as vLLM frees blocks in reverse order).
        for h in reversed(hashes):
            refs = self._refs[h] - 1
            self._refs[h] = refs
            if refs == 0:
                self._evictable[h] = None

    def reset_prefix_cache(self) -> int:
        """Drop every idle cached block (``/reset_prefix_cache``, ``/flush_cache``)."""
        dropped = len(self._evictable)
        for h in self._evictable:
            del self._refs[h]
        self.free += dropped
        self._evictable.clear()
        return dropped

"""A per-process cache bounded by bytes, the least recently used item evicted first: what a
report worker keeps between reports (insights/held.py). Each item states its own size; the
cache never holds more than its budget of stated bytes. Keys must name immutable things (a
release, a geometry), never a time: an item is then never stale, only evicted."""

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable

import numpy as np

# What an item costs beyond its arrays' bytes: its key tuple, the dict's node, the arrays' headers.
ITEM_OVERHEAD = 1024


def arrays_size(arrays: Iterable[np.ndarray | None]) -> int:
    """An item's stated size: its arrays' bytes and the fixed overhead."""
    return ITEM_OVERHEAD + sum(array.nbytes for array in arrays if array is not None)


class ByteLRU:
    """Items by key, at most `budget` stated bytes in all. Thread-safe: the web's threads share
    a process's caches."""

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable):
        """The item, now the most recently used; None if absent."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, value: object, size: int) -> None:
        """Keep the item, evicting the least recently used until the budget holds. An item larger
        than the whole budget is not kept."""
        if size > self.budget:
            return
        with self._lock:
            replaced = self._items.pop(key, None)
            if replaced is not None:
                self.bytes -= replaced[1]
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.budget:
                _, (_, freed) = self._items.popitem(last=False)
                self.bytes -= freed

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

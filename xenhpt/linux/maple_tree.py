"""The kernel's maple tree (``lib/maple_tree.c``, Linux 6.1+): ranges of indices → entries.

A process's VMAs live in one (``mm_struct.mm_mt``), keyed by address. What a walk from
outside needs (``include/linux/maple_tree.h``):

- ``ma_root`` is either an entry itself (a tree of one range) or an *encoded node*
  marked as the root (bit 1, ``MAPLE_ROOT_NODE``). An encoded node is a 256-byte-aligned
  ``maple_node`` pointer with the node type in bits 3-6 (and bit 2 set); an internal
  node's non-empty slots are all encoded nodes, without the root mark.
- Range nodes (``maple_range_64``: leaf or internal) have 15 pivots and 16 slots,
  allocation-range nodes (``maple_arange_64``: internal only, the mm tree's) 9 pivots and
  10 slots (a 32-bit kernel's 256-byte node holds 4-byte words: 31/32 and 20/21; the
  counts come from the profile). Slot ``i`` covers ``(pivot[i-1], pivot[i]]``; the last
  slot, or the first whose pivot is 0 past slot 0, runs up to the node's own maximum, and
  ends the node.
- Each node's ``parent`` points back at its parent node (the root's, at the tree).

The walk yields (first index, last index, entry) for every non-empty leaf slot, in
index order. Guest memory is hostile: depth and node count are bounded, every node is
visited once, a child whose ``parent`` does not point back is not followed, and each
such problem is noted instead of raised.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .kernel import Kernel

NODE_ALIGN_MASK = 0xFF  # MAPLE_NODE_MASK: nodes are 256-byte aligned
NODE_TYPE_SHIFT = 3
NODE_TYPE_MASK = 0x0F
DENSE, LEAF_64, RANGE_64, ARANGE_64 = 0, 1, 2, 3
MAX_HEIGHT = 31  # MAPLE_HEIGHT_MAX
MAX_NODES = 1 << 16  # a process has at most vm.max_map_count (65530) VMAs by default


def is_node(entry: int) -> bool:
    """xa_is_node() on ``ma_root``: the root holds a node, not a single entry."""
    return entry & 3 == 2 and entry > 4096


@dataclass
class TreeWalk:
    """Problems met while walking one tree (each one line, for a warning)."""

    problems: list[str] = field(default_factory=list)


class MapleTreeReader:
    """Walks maple trees through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.root_offset = p.offset("maple_tree", "ma_root")
        self.node_size = p.size("maple_node")
        # Pivots and slots are unsigned longs and pointers: the kernel's word.
        self.word = "Q" if kernel.pointer_size == 8 else "I"
        self.layout = {}
        for kind, struct_name in ((RANGE_64, "maple_range_64"), (LEAF_64, "maple_range_64"),
                                  (ARANGE_64, "maple_arange_64")):
            pivots = p.field_type(struct_name, "pivot")["count"]
            slots = p.field_type(struct_name, "slot")["count"]
            self.layout[kind] = (p.offset(struct_name, "pivot"), pivots,
                                 p.offset(struct_name, "slot"), slots)

    def entries(self, tree: int, walk: TreeWalk,
                limit: int = MAX_NODES) -> Iterator[tuple[int, int, int]]:
        """(first, last, entry) for every non-empty leaf slot of the tree at ``tree``."""
        try:
            root = self.kernel.pointer(tree + self.root_offset)
        except MemoryReadError:
            walk.problems.append(f"maple tree {tree:#x} unreadable")
            return
        if not root:
            return
        if not is_node(root):
            yield 0, 0, root  # a single entry at index 0, held in the root itself
            return
        budget = [limit]
        yield from self._node(root, tree & ~NODE_ALIGN_MASK, 0, self.kernel.word_max, 1, set(),
                              walk, budget)

    def _node(self, entry: int, parent: int, low: int, high: int, depth: int,
              seen: set[int], walk: TreeWalk, budget: list[int],
              ) -> Iterator[tuple[int, int, int]]:
        address = entry & ~NODE_ALIGN_MASK
        kind = (entry >> NODE_TYPE_SHIFT) & NODE_TYPE_MASK
        if address in seen:
            walk.problems.append(f"maple node {address:#x} reached twice; not followed again")
            return
        if depth > MAX_HEIGHT or budget[0] <= 0:
            walk.problems.append(f"maple tree deeper than {MAX_HEIGHT} or larger than "
                                 f"{MAX_NODES} nodes at {address:#x}; walk stopped")
            return
        seen.add(address)
        budget[0] -= 1
        if kind not in self.layout:
            walk.problems.append(f"maple node {address:#x} has unknown type {kind}; skipped")
            return
        try:
            raw = self.kernel.read(address, self.node_size)
        except MemoryReadError:
            walk.problems.append(f"maple node {address:#x} unreadable; its range "
                                 f"{low:#x}-{high:#x} skipped")
            return
        if self.kernel.pointer_at(raw, 0) & ~NODE_ALIGN_MASK != parent:
            walk.problems.append(f"maple node {address:#x} does not point back at its "
                                 f"parent {parent:#x}; skipped")
            return
        pivot_at, pivots, slot_at, slots = self.layout[kind]
        pivot = struct.unpack_from(f"<{pivots}{self.word}", raw, pivot_at)
        slot = struct.unpack_from(f"<{slots}{self.word}", raw, slot_at)
        first = low
        for i in range(slots):
            last = pivot[i] if i < pivots else high
            if i > 0 and last == 0 or last > high:
                last = high  # past the data: the slot runs to the node's maximum
            if slot[i]:
                if kind == LEAF_64:
                    yield first, last, slot[i]
                elif slot[i] > 4096:
                    yield from self._node(slot[i], address, first, last, depth + 1, seen,
                                          walk, budget)
                else:
                    walk.problems.append(f"maple node {address:#x} slot {i} is not a node")
            if last >= high:
                return
            first = last + 1

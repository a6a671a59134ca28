"""What ``bridge loadtest`` reads and sets on its processes: their trees, CPU seconds and RSS (``/proc``),
and the cores they run on.

**Pinning.** The bridge under test gets cores of its own and the harness (the Gladia stand-in, the
callers, the balancer, a Redis started here) the others, so neither takes CPU from the other and a busy
harness shows in its own figures instead of as a slower bridge. :func:`split_cores` decides (pure);
:func:`plan_pinning` adds what only this machine knows. Affinity is per thread and copied at ``fork``,
so nothing is set on a process after it starts: :func:`pinned` pins the calling thread of the tool to
the harness cores before it starts anything (every harness process inherits them), and
:func:`starting_on` switches that thread to the bridge's cores for as long as a bridge process takes to
start (``bridge serve``'s workers and threads, started later, inherit them from it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- reading /proc ----------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (the children of each of its threads), parents first."""
    pids = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return pids
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids.extend(process_tree(int(child)))
    return pids


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and of its descendants unless ``tree`` is false)."""
    total = 0.0
    for p in process_tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def parse_cpu_list(text: str) -> list[int]:
    """A kernel CPU list (``0-2,5``, as in ``Cpus_allowed_list``) as the cores it names."""
    cores: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def cpus_allowed(pid: int) -> dict[int, list[int]]:
    """The cores each thread of ``pid`` may run on (``/proc/<pid>/task/<tid>/status``), by thread id."""
    found: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        found[int(task.name)] = parse_cpu_list(line.split(":", 1)[1])
    return found


# -- pinning ----------------------------------------------------------------------------------------------


def split_cores(cores: Iterable[int], workers: int = 1, instances: int = 1) -> tuple[list[int], list[int]] | str:
    """The bridge's cores and the harness's, from the ``cores`` this process may use, or why not.

    The harness gets half the cores (at least one), less if the bridge's processes (``workers`` x
    ``instances``) want more; the bridge takes the lowest (2 cores: the bridge on the first, the harness
    on the second). With fewer cores than the bridge's processes plus one, the bridge's processes share
    all cores but one, and the harness keeps that one: the load never takes CPU from the bridge, and one
    worker and two are measured on the same cores.
    """
    available = sorted(set(cores))
    if len(available) < 2:
        return "one core: the bridge and the harness cannot be kept apart"
    wanted = max(1, workers) * max(1, instances)
    bridge = max(len(available) - max(1, len(available) // 2), min(wanted, len(available) - 1))
    return available[:bridge], available[bridge:]


@dataclass(frozen=True)
class Pinning:
    """The cores of the bridge under test and of the harness, or (both None) why nothing is pinned."""

    bridge: list[int] | None = None
    harness: list[int] | None = None
    note: str | None = None

    def figures(self) -> dict[str, Any]:
        """The JSON line's ``pinning`` and ``pinning_note``."""
        pinning = {"bridge": self.bridge, "harness": self.harness} if self.bridge and self.harness else None
        return {"pinning": pinning, "pinning_note": self.note}


def plan_pinning(pin: bool, workers: int, instances: int, reference: bool, bridge_url: str | None) -> Pinning:
    """Where ``bridge loadtest``'s processes run: :func:`split_cores` of the cores this process may use,
    unless pinning is off, impossible here, or the bridge is not started here."""
    if not pin:
        return Pinning(note="--no-pin")
    if not hasattr(os, "sched_setaffinity") or not hasattr(os, "sched_getaffinity"):
        return Pinning(note="os.sched_setaffinity is not available on this platform (Linux only)")
    if bridge_url is not None and not reference:
        return Pinning(note="--bridge-url: the bridge under test is not started here")
    processes = 1 if reference else max(1, workers) * max(1, instances)
    split = split_cores(os.sched_getaffinity(0), 1 if reference else workers, 1 if reference else instances)
    if isinstance(split, str):
        return Pinning(note=split)
    bridge, harness = split
    shared = None
    if processes > len(bridge):
        shared = (
            f"the bridge's {processes} processes share {len(bridge)} core{'s' if len(bridge) > 1 else ''}; "
            f"the harness keeps {len(harness)} (--no-pin to let them spread)"
        )
    return Pinning(bridge=bridge, harness=harness, note=shared)


@contextlib.contextmanager
def pinned(plan: Pinning) -> Iterator[Pinning]:
    """Runs the calling thread, and every process or thread it starts meanwhile, on the harness cores;
    restores its own affinity on the way out. Yields the plan, or (nothing pinned) one saying why the
    kernel refused it."""
    if plan.harness is None:
        yield plan
        return
    before = os.sched_getaffinity(0)
    refused: Pinning | None = None
    try:
        os.sched_setaffinity(0, plan.harness)
    except OSError as e:
        refused = Pinning(note=f"sched_setaffinity refused: {e}")
    try:
        yield refused or plan
    finally:
        if refused is None:
            os.sched_setaffinity(0, before)


@contextlib.contextmanager
def starting_on(cores: list[int] | None) -> Iterator[None]:
    """The processes started inside run on ``cores`` (None: as they would), and everything they start
    later: the calling thread runs there meanwhile, and a child starts with its parent's affinity."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)

"""``doorgw bench idle``: what the first work after a pause costs on this machine.

A gateway is idle nearly all the time: taps come seconds apart, deltas
hundreds of milliseconds apart.  On some machines the first work after a
pause runs many times slower than the same work done back to back: CPUs
that sleep deeply or clock down between events (a Raspberry Pi's governor
can), or a virtual machine whose host deschedules an idle virtual CPU and
reclaims the memory it has not touched lately.  Every figure of ``bench
tap`` and ``sim fleet`` pays this on each wakeup, and their floors (which
do far less per wakeup) pay less of it; this bench measures it alone, so
those figures can be read for the machine they came from.

Two fixed pieces of work are timed, each ``--samples`` times after sleeping
``--pause`` seconds (the two alternate, one per pause):

* **syscall**: one ``getpid`` system call;
* **page_reads**: reading one byte of each of ``--pages`` pages of memory
  allocated and written at start.

**Floor**: the same work, the same number of times, back to back.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import time
from collections.abc import Callable
from typing import Any

from gateway.tools.sitegen import percentile

#: Bytes between two reads: the system's page (4 KiB on x86 and most Pis, 16 KiB
#: under a Raspberry Pi 5's own kernel).
PAGE = mmap.PAGESIZE


def _timed(work: Callable[[], object]) -> int:
    started = time.perf_counter_ns()
    work()
    return time.perf_counter_ns() - started


def run(pause: float, samples: int, pages: int) -> dict[str, Any]:
    """Time both pieces of work after pauses and back to back; the figures."""
    memory = bytearray(b"\x01" * (pages * PAGE))  # written: every page is resident

    def touch() -> int:
        total = 0
        for offset in range(0, len(memory), PAGE):
            total += memory[offset]
        return total

    kinds: dict[str, Callable[[], object]] = {"syscall": os.getpid, "page_reads": touch}
    after: dict[str, list[int]] = {name: [] for name in kinds}
    floor: dict[str, list[int]] = {name: [] for name in kinds}
    for name, work in kinds.items():
        _timed(work)  # loaded and warm before the floor is measured
        floor[name] = [_timed(work) for _ in range(samples)]
    for _ in range(samples):
        for name, work in kinds.items():
            time.sleep(pause)
            after[name].append(_timed(work))
    out: dict[str, Any] = {"pause_s": pause, "samples": samples, "pages": pages}
    for name in kinds:
        woken, back = sorted(after[name]), sorted(floor[name])
        p50, f50 = round(percentile(woken, 0.5), 1), round(percentile(back, 0.5), 1)
        out[name] = {
            "p50_us": p50,
            "p99_us": round(percentile(woken, 0.99), 1),
            "floor_p50_us": f50,
            "floor_p99_us": round(percentile(back, 0.99), 1),
            # A system call can take under 0.1 us back to back: counted as 0.1.
            "ratio_p50": round(p50 / max(f50, 0.1), 1),
        }
    reads = out["page_reads"]
    # What reading one page again costs after the pause, and back to back.
    out["page_us"] = round(reads["p50_us"] / pages, 3)
    out["floor_page_us"] = round(reads["floor_p50_us"] / pages, 3)
    return out


def bench_idle(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    result = run(args.pause, args.samples, args.pages)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"work after {result['pause_s']:g} s idle against the same work back to back, "
        f"{result['samples']} samples each"
    )
    for name, label in (("syscall", "one getpid call"), ("page_reads", f"{args.pages} pages read")):
        f = result[name]
        print(
            f"  {label:<18} p50 {f['p50_us']:>9.1f} us   p99 {f['p99_us']:>9.1f} us   "
            f"floor p50 {f['floor_p50_us']:>8.1f} us   ratio p50 {f['ratio_p50']:>6.1f} x"
        )
    print(
        f"  one page read again: {result['page_us']:.3f} us after the pause, "
        f"{result['floor_page_us']:.3f} us back to back"
    )
    return 0

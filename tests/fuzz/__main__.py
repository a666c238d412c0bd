"""Structure-aware fuzzing of every parser that reads outside input.

Not part of the test suite (it runs for as long as it is told to):

    tests/fuzz/run                      # every target, 10**6 inputs each
    tests/fuzz/run --count 20000        # a quick pass
    tests/fuzz/run --target jws --seconds 60 --json

Each target starts from valid seeds (a signed delta, snapshot chunk and
command; a signed pass and app code; Wiegand frames of each format; PN532
frames; a config file...) and mutates them: bytes flipped, cut, repeated
or spliced; JSON values swapped for hostile ones (huge and negative
numbers, deep nesting, names given twice, wrong types); messages re-signed
after mutation so that absurd input also gets past the signature.

An input *crashes* when it raises anything but the parser's documented
refusal (``DoorgwError`` and its kin), and *hangs* when it takes longer
than :data:`HANG_SECONDS`.  The report gives, per target: inputs, crashes,
hangs, the slowest input and the rate.  Crashing inputs are written to
``--out`` to be replayed.  docs/security.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.targets import TARGETS, Target

#: An input slower than this is a hang (seconds).
HANG_SECONDS = 2.0


class _HangError(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _HangError


@dataclass
class Result:
    """One target's figures."""

    target: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    slowest_us: float = 0.0
    slowest_size: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0
        return (
            f"{self.target:<16} {self.inputs:>10,} inputs  {self.crashes:>3} crashes  "
            f"{self.hangs:>2} hangs  slowest {self.slowest_us / 1000:8.2f} ms "
            f"({self.slowest_size:,} bytes)  {rate:>9,.0f}/s"
        )


def run_target(
    target: Target, count: int, seconds: float | None, rng: random.Random, out: Path
) -> Result:
    result = Result(target.name)
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    seen: set[str] = set()
    while result.inputs < count and (seconds is None or time.perf_counter() - started < seconds):
        data = target.mutate(rng)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            target.check(data)
        except _HangError:
            result.hangs += 1
            _save(out, target.name, "hang", data)
        except target.refusals:
            pass
        except Exception as exc:  # noqa: BLE001 - anything else is what we look for
            result.crashes += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            kind = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
            result.kinds[kind] = result.kinds.get(kind, 0) + 1
            if kind not in seen:
                seen.add(kind)
                _save(out, target.name, kind.replace(" ", "_").replace(":", "-"), data)
                print(f"  {target.name}: {kind}: {str(exc)[:200]}", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = (time.perf_counter() - t0) * 1e6
        if took > result.slowest_us:
            result.slowest_us, result.slowest_size = took, _size(data)
        result.inputs += 1
    result.seconds = time.perf_counter() - started
    return result


def _size(data: Any) -> int:
    if isinstance(data, (bytes, str, list)):
        return len(data)
    return len(repr(data))


def _save(out: Path, target: str, kind: str, data: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    raw = data if isinstance(data, bytes) else repr(data).encode()
    (out / f"{target}-{kind}.bin").write_bytes(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/fuzz/run", description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seconds", type=float, help="at most this long per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--json", action="store_true", help="one JSON document at the end")
    args = parser.parse_args(argv)
    if args.count < 1 or (args.seconds is not None and args.seconds <= 0):
        parser.error("--count and --seconds must be positive")
    results = []
    for name in args.target or sorted(TARGETS):
        rng = random.Random(f"{args.seed}:{name}")
        target = TARGETS[name]()
        result = run_target(target, args.count, args.seconds, rng, args.out)
        results.append(result)
        if not args.json:
            print(result.line(), flush=True)
            for kind, n in sorted(result.kinds.items()):
                print(f"    {n:>8,} x {kind}")
    if args.json:
        doc = [r.__dict__ for r in results]
        print(json.dumps({"python": sys.version.split()[0], "pid": os.getpid(), "results": doc}))
    return 1 if any(r.crashes or r.hangs for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

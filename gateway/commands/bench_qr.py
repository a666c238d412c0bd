"""``doorgw bench qr``: how fast scanned codes are verified, against the bare signature check.

Verification is :func:`check_code`, exactly as the daemon runs it against a
real cache file of a synthetic site: parse the text, find the key, check
the signature and the code's own rules (site, door, revocation, use limit,
window).  For a signed pass that is its whole decision; a verified app code
then goes on to its member's access decision, the same work as a card tap
(``doorgw bench decide``), timed here too as ``decide_*`` (end to end).

The floor, measured in the same run and interleaved code by code, is the
bare Ed25519 verification of the same signed bytes with an already loaded
key: the one cost no gateway can skip.  The ratio says what the format, the
cache reads and the rules add to it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core import model, qr
from gateway.core.decision import Conditions, check_code, decide_code
from gateway.core.jws import KeySet
from gateway.store.reader import CacheReader
from gateway.tools.sitegen import T0, app_credential, build_dataset, percentile, write_bench_cache

#: Accepted either side of an app code's making, as in the daemon's default.
WINDOW = 30
#: Every code is checked on a trusted clock, with the default app-code window.
CONDITIONS = Conditions(code_window=WINDOW, clock_trusted=True)


def _build(
    members: int, bookings: int, app_users: int, rng: random.Random
) -> tuple[model.Dataset, list[tuple[str, Ed25519PrivateKey]]]:
    ds = build_dataset(members, bookings, rng)
    apps = []
    creds = []
    for i in range(app_users):
        credential, key = app_credential(f"app{i}", f"m{rng.randrange(members)}")
        creds.append(credential)
        apps.append((f"app{i}", key))
    revoked = tuple(model.RevokedPass(f"dp-{i}", T0 + 86_400) for i in range(0, 1000, 10))
    ds = dataclasses.replace(ds, credentials=ds.credentials + tuple(creds), revoked_passes=revoked)
    return ds, apps


def _codes(
    ds: model.Dataset,
    apps: list[tuple[str, Ed25519PrivateKey]],
    issuer: qr.PassIssuer,
    platform: Ed25519PublicKey,
    count: int,
    rng: random.Random,
) -> list[tuple[str, str, Ed25519PublicKey]]:
    """(text, door, the key that verifies it): half passes, half app codes."""
    doors = [d.id for d in ds.doors]
    out = []
    for j in range(count):
        door = rng.choice(doors)
        if j % 2 == 0:
            start = T0 - rng.choice((3600, 7200, -1800))  # mostly valid, some not yet
            text = issuer.issue(
                site=ds.site.id,
                pass_id=f"dp-{j}",
                kind=rng.choice(list(qr.PassKind)),
                not_before=start,
                not_after=start + 8 * 3600,
                doors=[door] if rng.random() < 0.8 else [rng.choice(doors)],
                max_uses=rng.choice((0, 1)),
            )
            out.append((text, door, platform))
        else:
            cred_id, key = rng.choice(apps)
            text = qr.app_code(key, cred_id, T0 - rng.randrange(0, 20))
            out.append((text, door, key.public_key()))
    return out


def run(
    members: int,
    bookings: int,
    count: int,
    seed: int,
    directory: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Build the cache in ``directory``, time ``count`` codes, return the figures."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    progress(f"building a site of {members:,} members and {bookings:,} bookings ...")
    ds, apps = _build(members, bookings, min(members, 2000), rng)
    path = directory / "bench-qr.sqlite3"
    path.unlink(missing_ok=True)
    asyncio.run(write_bench_cache(path, ds))
    platform = Ed25519PrivateKey.generate()
    keys = KeySet({"platform": platform.public_key()})
    progress(f"issuing {count:,} codes ...")
    codes = _codes(ds, apps, qr.PassIssuer(platform, "platform"), platform.public_key(), count, rng)
    sizes = {
        "pass_chars": max(len(t) for t, _, _ in codes[0::2]),
        "app_code_chars": max(len(t) for t, _, _ in codes[1::2]),
    }
    del ds
    floors = []
    for text, _, key in codes:
        scanned = qr.parse(text)
        floors.append((key, scanned.signature, scanned.signed))

    reader = CacheReader(path)
    gc.collect()
    gc.freeze()
    reasons: Counter[str] = Counter()

    def check(text: str, door: str) -> Any:
        with reader.view() as view:
            return check_code(view, text, door, T0, CONDITIONS, keys=keys)

    def decide(text: str, door: str) -> Any:
        with reader.view() as view:
            return decide_code(view, text, door, T0, CONDITIONS, keys=keys)

    # Untimed pass: warm the caches (statements, app keys) and count the outcomes.
    for text, door, _ in codes:
        check(text, door)
        reasons[decide(text, door).decision.reason.value] += 1
    progress(f"timing {count:,} codes and their floor ...")
    clock = time.perf_counter_ns
    code_ns: list[int] = []
    decide_ns: list[int] = []
    floor_ns: list[int] = []
    for (text, door, _), (key, signature, signed) in zip(codes, floors, strict=True):
        t0 = clock()
        check(text, door)
        t1 = clock()
        key.verify(signature, signed)
        t2 = clock()
        decide(text, door)
        t3 = clock()
        code_ns.append(t1 - t0)
        floor_ns.append(t2 - t1)
        decide_ns.append(t3 - t2)
    reader.close()
    gc.unfreeze()
    passes_ns = sorted(code_ns[0::2])
    app_ns = sorted(code_ns[1::2])
    total_s = sum(code_ns) / 1e9
    code_ns.sort()
    floor_ns.sort()
    decide_ns.sort()
    p99, f99 = percentile(code_ns, 0.99), percentile(floor_ns, 0.99)
    return {
        "members": members,
        "bookings": bookings,
        "codes": count,
        "codes_per_s": round(count / total_s),
        "p50_us": round(percentile(code_ns, 0.50), 1),
        "p99_us": round(p99, 1),
        "max_us": round(code_ns[-1] / 1000, 1),
        "floor_p50_us": round(percentile(floor_ns, 0.50), 1),
        "floor_p99_us": round(f99, 1),
        "ratio": round(p99 / f99, 2),
        "pass_p99_us": round(percentile(passes_ns, 0.99), 1),
        "app_code_p99_us": round(percentile(app_ns, 0.99), 1),
        "decide_codes_per_s": round(count / (sum(decide_ns) / 1e9)),
        "decide_p50_us": round(percentile(decide_ns, 0.50), 1),
        "decide_p99_us": round(percentile(decide_ns, 0.99), 1),
        "decide_ratio": round(percentile(decide_ns, 0.99) / f99, 2),
        **sizes,
        "reasons": dict(reasons.most_common()),
    }


def bench_qr(args: argparse.Namespace) -> int:
    """The ``doorgw bench qr`` command."""

    def progress(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="doorgw-bench-qr-") as tmp:
        result = run(args.members, args.bookings, args.codes, args.seed, Path(tmp), progress)
    if args.json:
        print(json.dumps(result))
        return 0
    met = result["ratio"] <= 1.5
    print(
        f"site:   {result['members']:,} members, {result['bookings']:,} bookings\n"
        f"codes:  {result['codes']:,} (half signed passes, half app codes; "
        f"up to {result['pass_chars']} and {result['app_code_chars']} characters)\n"
        f"verify  {result['codes_per_s']:>7,} codes/s   p50 {result['p50_us']:>6.1f} us   "
        f"p99 {result['p99_us']:>6.1f} us   max {result['max_us']:.1f} us\n"
        f"          (passes p99 {result['pass_p99_us']} us, "
        f"app codes p99 {result['app_code_p99_us']} us)\n"
        f"floor                   p50 {result['floor_p50_us']:>6.1f} us   "
        f"p99 {result['floor_p99_us']:>6.1f} us   (bare Ed25519 verify of the same bytes)\n"
        f"ratio   p99 {result['ratio']:.2f}   target <= 1.5: {'met' if met else 'NOT met'}\n"
        f"end to end, with app codes' member decisions: {result['decide_codes_per_s']:,} codes/s"
        f"   p50 {result['decide_p50_us']} us   p99 {result['decide_p99_us']} us   "
        f"(ratio {result['decide_ratio']:.2f})"
    )
    return 0

"""Ledger throughput: signed transfers settled per second and full-chain verification rate.

Settling a transfer here means what the ledger does with a signed transfer that arrives from a
node: check its signature, check its nonce and store it, sealing a block of 1,000 records per
commit.  Measured on SQLite (WAL, synchronous=FULL) and on a PostgreSQL server on loopback,
against two baselines from the same run: signature checks alone, and storing without them.
Chain verification (``verify_chain``: ids, encodings, signatures, nonces, Merkle roots, links)
is timed on one thread and on all cores; the full run also builds and verifies a real chain of
one million records.  Goals (issue "The ledger"): >= 5,000 transfers/s on SQLite, and one
million records verified in under two minutes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from ledger.errors import StoreError
from ledger.keys import Identity, verify_signatures
from ledger.records import SignedRecord, Transfer, sign
from ledger.store import Store, open_store
from ledger.verify import verify_chain

BLOCK = 1000
PAYERS = 64


def identities(n: int) -> list[Identity]:
    return [Identity.from_seed(f"n{i}", hashlib.sha256(f"bench-{i}".encode()).digest())
            for i in range(n)]


def transfers(payers: list[Identity], blocks: int,
              ledger_id: bytes = b"") -> Iterator[list[SignedRecord]]:
    """Blocks of transfers signed for the ledger ``ledger_id``, payer ``j % P`` paying payer
    ``j+1 % P``, nonces 1, 2, ..."""
    nonce = [0] * len(payers)
    j = 0
    for block in range(blocks):
        batch = []
        for _ in range(BLOCK):
            p = j % len(payers)
            nonce[p] += 1
            payer, payee = payers[p], payers[(p + 1) % len(payers)]
            batch.append(sign(Transfer(payer.public_key, nonce[p], block, payee.public_key,
                                       1 + j % 997, b""), payer, ledger_id))
            j += 1
        yield batch


def settle_blocks(store: Store, batches: list[list[SignedRecord]], operator: Identity,
                  check: bool = True) -> float:
    """Seconds to store every batch as one block per commit (signatures checked or not)."""
    t0 = time.perf_counter()
    for interval, batch in enumerate(batches):
        with store.transaction():
            if check:
                store.append(batch)
            else:
                store.insert(batch)
            store.seal(interval, operator)
    return time.perf_counter() - t0


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def store_rates(open_target: Callable[[], str], payers: list[Identity], blocks: int,
                operator: Identity) -> dict:
    """Transfers settled per second into new ledgers (each signs for its own ledger id)."""
    n = blocks * BLOCK
    with open_store(open_target()) as store:
        batches = list(transfers(payers, blocks, store.ledger_id))
        settled = settle_blocks(store, batches, operator)
    with open_store(open_target()) as store:
        batches = list(transfers(payers, blocks, store.ledger_id))
        unchecked = settle_blocks(store, batches, operator, check=False)
    return {"transfers_per_s": round(n / settled), "store_only_per_s": round(n / unchecked)}


def chain_verification(target: str) -> dict:
    with open_store(target, create=False) as store:
        records = sum(store.count())
        parallel = timed(lambda: verify_chain(store))
        single = timed(lambda: verify_chain(store, workers=1))
    rate = records / parallel
    return {"records": records, "records_per_s": round(rate),
            "records_per_s_one_thread": round(records / single),
            "speedup_all_cores": round(single / parallel, 2),
            "extrapolated_1m_s": round(1e6 / rate, 1)}


def million(directory: Path, payers: list[Identity], operator: Identity) -> dict:
    """Build a real chain of one million transfers (1,000 blocks), then verify it."""
    target = directory / "million.db"
    t0 = time.perf_counter()
    with open_store(target) as store:
        for interval, batch in enumerate(transfers(payers, 1000, store.ledger_id)):
            with store.transaction():
                store.insert(batch)
                store.seal(interval, operator)
    built = time.perf_counter() - t0
    with open_store(target, create=False) as store:
        records = sum(store.count())
        seconds = timed(lambda: verify_chain(store))
    return {"records": records, "build_s": round(built, 1), "verify_s": round(seconds, 1),
            "records_per_s": round(records / seconds),
            "db_mb": round(target.stat().st_size / 2**20, 1)}


def run(quick: bool) -> dict:
    blocks = 4 if quick else 30
    payers, operator = identities(PAYERS), identities(PAYERS + 1)[-1]
    load = os.getloadavg()[0]  # other work on the machine slows every figure below
    t0 = time.perf_counter()
    batches = list(transfers(payers, blocks))
    n = blocks * BLOCK
    result: dict = {"transfers": n, "block": BLOCK, "cores": os.cpu_count(),
                    "load_average_at_start": load,
                    "sign_per_s": round(n / (time.perf_counter() - t0))}
    items = [(r.record.signer, r.body, r.signature) for b in batches for r in b]
    result["verify_signatures_only_per_s"] = round(n / timed(lambda: verify_signatures(items)))
    result["verify_signatures_one_thread_per_s"] = round(
        n / timed(lambda: verify_signatures(items, workers=1)))
    with tempfile.TemporaryDirectory(prefix="gridloop-bench-ledger-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        counter = iter(range(10**6))
        sqlite = store_rates(lambda: str(directory / f"l{next(counter)}.db"), payers, blocks,
                             operator)
        sqlite["vs_signature_checks_alone"] = round(
            sqlite["transfers_per_s"] / result["verify_signatures_only_per_s"], 3)
        sqlite["goal_5000_per_s"] = sqlite["transfers_per_s"] >= 5000
        result["sqlite"] = sqlite
        try:
            from ledger.pgserver import new_schema_url, temporary_server

            server = os.environ.get("GRIDLOOP_BENCH_POSTGRES") or \
                stack.enter_context(temporary_server())
            postgres = store_rates(lambda: new_schema_url(server), payers, blocks, operator)
            postgres["vs_sqlite"] = round(postgres["transfers_per_s"] /
                                          sqlite["transfers_per_s"], 3)
            result["postgres"] = postgres
        except StoreError as exc:  # no server binaries here: report it, keep the rest
            result["postgres"] = {"error": str(exc)}
        result["chain_verification"] = chain_verification(str(directory / "l0.db"))
        result["chain_verification"]["goal_1m_under_120_s"] = \
            result["chain_verification"]["extrapolated_1m_s"] < 120
        if not quick:
            big = million(directory, payers, operator)
            big["goal_under_120_s"] = big["verify_s"] < 120
            result["chain_verification_1m"] = big
    return result

"""A trading process for the kill -9 test: a fixed workload that reports every commit.

Usage: ``python crash_worker.py LEDGER KEYDIR INTERVALS``.  Each line on stdout is a JSON
object ``{"op": ..., "ids": [hex, ...]}`` printed after the operation committed; the last line
is ``{"op": "done"}``.  Started again after a crash, it replays the workload from the start:
what was committed comes back unchanged, the rest is done now.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from ledger.session import MarketSession

NODES = ("a", "b", "c")


def open_session(target: str, keys: str) -> MarketSession:
    return MarketSession(target, keys=keys, nodes=NODES, market="uniform", interval_s=60,
                         import_price_micro_per_wh=300, export_price_micro_per_wh=80)


def workload(session: MarketSession, intervals: int,
             report: Callable[[str, list[bytes]], None]) -> None:
    """Per interval: three orders, clear, three meter readings, settle."""
    for k in range(1, intervals + 1):
        for n, node in enumerate(NODES):
            side = "sell" if (n + k) % 3 == 0 else "buy"
            order = session.submit_order(node, side, 20 + 7 * n + k % 5,
                                         100 + 13 * ((n + k) % 7), k)
            report("order", [order.id])
        report("clear", [t.id for t in session.clear(k)])
        for n, node in enumerate(NODES):
            reading = session.submit_meter_reading(node, k, (k * (n + 3)) % 40,
                                                   (k * (n + 5)) % 35)
            report("meter_reading", [reading.id])
        settled = session.settle(k)
        report("settle", [s.id for s in settled] + [t.id for t in session.transfers(k)])


def main(argv: list[str]) -> int:
    target, keys, intervals = argv[0], argv[1], int(argv[2])

    def report(op: str, ids: list[bytes]) -> None:
        print(json.dumps({"op": op, "ids": [i.hex() for i in ids]}), flush=True)

    with open_session(target, keys) as session:
        workload(session, intervals, report)
    print(json.dumps({"op": "done"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

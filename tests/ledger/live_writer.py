"""A trading process that writes a ledger on command, for the tests that read a ledger while
a run writes it (``verify``, ``show`` and ``export`` during a run).

Usage: ``python live_writer.py LEDGER KEYDIR``, then one command per line on stdin, each
answered with ``ok`` on stdout once it has committed:

- ``orders K``: the three nodes' orders for interval ``K`` (pending records);
- ``settle K``: clear ``K``, the meter readings of ``K``, settle ``K`` (seals a block);
- ``run A B``: ``orders K`` and ``settle K`` for every ``K`` from ``A`` to ``B``;
- ``quit``: close the session and exit.

It prints ``ready`` once the session is open, so the ledger and its ``-wal`` exist.
"""

from __future__ import annotations

import sys

from ledger.session import MarketSession

NODES = ("a", "b", "c")


def open_session(target: str, keys: str) -> MarketSession:
    return MarketSession(target, keys=keys, nodes=NODES, market="uniform", interval_s=60,
                         import_price_micro_per_wh=300, export_price_micro_per_wh=80)


def orders(session: MarketSession, k: int) -> None:
    session.submit_order("a", "sell", 100, 120, k)
    session.submit_order("b", "buy", 60, 200, k)
    session.submit_order("c", "buy", 70, 150, k)


def settle(session: MarketSession, k: int) -> None:
    session.clear(k)
    session.submit_meter_reading("a", k, 0, 90)
    session.submit_meter_reading("b", k, 80, 0)
    session.submit_meter_reading("c", k, 30, 5)
    session.settle(k)


def main(argv: list[str]) -> int:
    with open_session(argv[0], argv[1]) as session:
        print("ready", flush=True)
        for line in sys.stdin:
            command, *numbers = line.split()
            if command == "quit":
                break
            ks = [int(n) for n in numbers]
            if command == "orders":
                orders(session, ks[0])
            elif command == "settle":
                settle(session, ks[0])
            elif command == "run":
                for k in range(ks[0], ks[1] + 1):
                    orders(session, k)
                    settle(session, k)
            else:
                raise SystemExit(f"live_writer: unknown command {line.strip()!r}")
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""kill -9 during trading and settlement loses, duplicates and half-writes nothing.

A real subprocess runs :mod:`crash_worker` against the ledger and is killed with SIGKILL at
random moments, several times, then restarted until it finishes.  The result must be exactly
the ledger an uninterrupted run makes (same records, same block hashes), hold every record
the killed processes reported as committed, and verify.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.store import open_store
from ledger.verify import verify_chain

from .crash_worker import open_session, workload

WORKER = Path(__file__).with_name("crash_worker.py")
REPO = Path(__file__).resolve().parents[2]
INTERVALS = 12


def run_worker(target: str, keys: Path, known: set[str],
               stop_after: int | None) -> tuple[set[str], bool]:
    """Run the worker; SIGKILL it after ``stop_after`` reports of new records (replayed ones,
    all in ``known``, do not count).  Return the ids it reported and whether it finished."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(WORKER), target, str(keys), str(INTERVALS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    reported: set[str] = set()
    new = 0
    done = killed = False
    for line in proc.stdout:  # to the end: lines flushed before the kill landed count too
        if not line.endswith("\n"):
            break  # cut short by the kill: not a report
        doc = json.loads(line)
        if doc["op"] == "done":
            done = True
            continue
        new += bool(set(doc["ids"]) - known - reported)
        reported.update(doc["ids"])
        if stop_after is not None and new >= stop_after and not killed:
            proc.send_signal(signal.SIGKILL)  # mid-way through the next operation
            killed = True
    err = proc.stderr.read()
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    if not killed:
        assert proc.returncode == 0, err
    return reported, done


def ledger_contents(target: str) -> tuple[list[bytes], list[bytes]]:
    with open_store(target, create=False) as store:
        ids = [r.id for batch in store.all_rows() for r in batch]
        verify_chain(store)
        return ids, [b.hash for b in store.last_blocks(10**6)]


@pytest.mark.slow
def test_kill_9_during_trading_and_settlement(new_ledger: Callable[[], str],
                                              tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    reference = new_ledger()
    with open_session(reference, str(keys)) as session:
        workload(session, INTERVALS, lambda op, ids: None)
    ref_ids, ref_blocks = ledger_contents(reference)
    assert len(ref_blocks) == INTERVALS

    target = new_ledger()
    rng = random.Random(20_261_126)
    reported: set[str] = set()
    kills = 0
    for _ in range(6):
        got, done = run_worker(target, keys, reported, stop_after=rng.randint(1, 20))
        reported |= got
        if done:
            break
        kills += 1
    got, done = run_worker(target, keys, reported, stop_after=None)  # the last restart runs to the end
    reported |= got
    assert done and kills >= 3

    ids, blocks = ledger_contents(target)
    assert len(ids) == len(set(ids))  # nothing stored twice
    assert reported <= {i.hex() for i in ids}  # nothing that was reported committed is lost
    assert ids == ref_ids and blocks == ref_blocks  # exactly the uninterrupted ledger

"""The compound tables a run with a market records under ``/market``.

Integers only, as on the ledger: energy in Wh, prices in micro-units of the currency per Wh,
money in micro-units.  ``id`` is the ledger record's id (SHA-256, hex); node names are the
ledger's account names (``grid`` is the grid account).
"""

from __future__ import annotations

import numpy as np

ORDERS = np.dtype([("t", "f8"), ("interval", "i8"), ("node", "S32"), ("side", "S4"),
                   ("energy_wh", "i8"), ("price_micro_per_wh", "i8"), ("id", "S64")])
TRADES = np.dtype([("t", "f8"), ("interval", "i8"), ("buyer", "S32"), ("seller", "S32"),
                   ("energy_wh", "i8"), ("price_micro_per_wh", "i8"), ("id", "S64")])
#: one row per trade (energy delivered by the min-of-two rule) and per node exchange with
#: the grid account; ``amount_micro = energy_wh * price_micro_per_wh``, paid by the buyer.
#: Per interval: the trades' rows in chain order, then the grid exchanges by node name
#: (import, then export), so identical runs list them alike whatever their keys.
SETTLEMENTS = np.dtype([("t", "f8"), ("interval", "i8"), ("seller", "S32"), ("buyer", "S32"),
                        ("energy_wh", "i8"), ("price_micro_per_wh", "i8"),
                        ("amount_micro", "i8"), ("trade", "S64"), ("id", "S64")])
#: the signed meter readings settlement used; ``read_t`` is the run time of the counters the
#: reading ends at: the tick it was taken at, or an earlier one when the meter gave no valid
#: reading there (the ledger's ``read_ms``), NaN when the meter never gave valid counters
METER = np.dtype([("t", "f8"), ("interval", "i8"), ("node", "S32"), ("import_wh", "i8"),
                  ("export_wh", "i8"), ("id", "S64"), ("read_t", "f8")])

TABLES = {"market/orders": ORDERS, "market/trades": TRADES,
          "market/settlements": SETTLEMENTS, "market/meter_readings": METER}

"""The compound tables a run with a market records under ``/market``.

Integers only, as on the ledger: energy in Wh, prices in micro-units of the currency per
kWh, money in micro-units.  ``id`` is the ledger record id (SHA-256, hex).
"""

from __future__ import annotations

import numpy as np

ORDERS = np.dtype([("t", "f8"), ("interval", "i8"), ("node", "S32"), ("side", "S4"),
                   ("energy_wh", "i8"), ("price_micro_per_kwh", "i8"), ("id", "S64")])
TRADES = np.dtype([("t", "f8"), ("interval", "i8"), ("buyer", "S32"), ("seller", "S32"),
                   ("energy_wh", "i8"), ("price_micro_per_kwh", "i8"), ("id", "S64")])
#: ``amount_micro`` > 0: the node is paid; < 0: the node pays.  The grid account appears as
#: node ``grid``; every interval's amounts sum to zero.
SETTLEMENTS = np.dtype([("t", "f8"), ("interval", "i8"), ("node", "S32"),
                        ("traded_wh", "i8"), ("delivered_wh", "i8"),
                        ("grid_import_wh", "i8"), ("grid_export_wh", "i8"),
                        ("amount_micro", "i8"), ("id", "S64")])

TABLES = {"market/orders": ORDERS, "market/trades": TRADES, "market/settlements": SETTLEMENTS}

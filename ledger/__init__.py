"""Signed peer-to-peer energy trading settled against metered delivery, in a hash-chained store.

The bench trades through :class:`ledger.session.MarketSession`; the pieces under it are
:mod:`ledger.canonical` (the byte encoding), :mod:`ledger.records` (signed records),
:mod:`ledger.keys` (identities), :mod:`ledger.market` (auctions), :mod:`ledger.settlement`,
:mod:`ledger.chain` (blocks and Merkle roots), :mod:`ledger.store` (SQLite and PostgreSQL)
and :mod:`ledger.verify`.  This package imports no other gridloop package.
"""

from ledger.errors import LedgerError
from ledger.keys import Identity, KeyDirectory
from ledger.records import MeterReading, Order, Settlement, Trade, Transfer
from ledger.session import MarketSession
from ledger.store import Store, open_store
from ledger.verify import verify_chain

__all__ = ["Identity", "KeyDirectory", "LedgerError", "MarketSession", "MeterReading", "Order",
           "Settlement", "Store", "Trade", "Transfer", "open_store", "verify_chain"]

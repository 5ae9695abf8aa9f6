"""Signed peer-to-peer energy trading settled against metered delivery, in a hash-chained store."""

"""Device back-ends; each module is imported only when its back-end is used."""

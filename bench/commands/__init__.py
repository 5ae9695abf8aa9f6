"""One module per ``gridloop`` command; each exposes ``register(subparsers)``."""

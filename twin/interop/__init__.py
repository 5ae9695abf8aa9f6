"""Converters from other tools' parameter sets into gridloop parameter files.

Each converter imports its tool lazily, so ``import twin`` never needs it; a missing tool
raises :class:`twin.errors.ParameterError` naming the extra to install.
"""

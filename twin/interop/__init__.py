"""Importers of parameter sets from other tools (PyBaMM, the CEC library through pvlib)."""

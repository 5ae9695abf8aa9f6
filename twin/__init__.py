"""The physics twin: pure model functions, parameter sets with provenance, the lockstep stepper.

``twin`` never does I/O other than reading and writing parameter files, and imports none of
gridloop's other packages.
"""

__version__ = "0.1.0"

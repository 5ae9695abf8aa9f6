"""The live view: a PyQtGraph window that follows a run as it is recorded, or replays one.

``gridloop view RUN.h5 [--follow] [--screenshot OUT.png [--at SECONDS]]``; ``gridloop run
... --view`` opens the same window in-process through :func:`bench.view.app.show_live`.
Modules: :mod:`~bench.view.data` (incremental SWMR reads), :mod:`~bench.view.panels` (one
class per panel), :mod:`~bench.view.spectrum` (the racks' rolling spectrum),
:mod:`~bench.view.app` (the window, screenshots, the live entry point).  Qt is imported only
by ``panels`` and ``app``.
"""

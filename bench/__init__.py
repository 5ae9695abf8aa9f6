"""The bench: scenarios, the lockstep scheduler, controllers, recording, replay, views, the CLI."""

__version__ = "0.1.0"

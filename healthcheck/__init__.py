"""trainguard healthcheck: tell in seconds whether a training host answers SSH, and why not."""

__version__ = "0.1.0"

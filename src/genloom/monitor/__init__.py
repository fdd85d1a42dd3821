"""genloom.monitor."""

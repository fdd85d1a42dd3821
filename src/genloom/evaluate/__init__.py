"""genloom.evaluate."""

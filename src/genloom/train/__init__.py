"""genloom.train."""

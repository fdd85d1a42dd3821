"""genloom.clean."""

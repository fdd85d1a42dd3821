"""genloom.serve."""

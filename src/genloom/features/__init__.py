"""genloom.features."""

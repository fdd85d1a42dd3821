"""genloom.models."""

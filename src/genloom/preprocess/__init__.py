"""genloom.preprocess."""

"""The training batches of text: ``TokenBatches`` lives with the token files in
``genloom.models.tokens`` (a family's ``open_data`` builds it); re-exported here for callers of
the training package."""

from genloom.models.tokens import TokenBatches

__all__ = ["TokenBatches"]

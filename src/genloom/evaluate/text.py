"""Held-out loss of a trained text model (nats per token, bits per character, perplexity): the
text families' evaluation, in ``genloom.models.text_family``; re-exported for callers of the
evaluation package."""

from genloom.models.text_family import evaluate_on_texts, evaluate_text_model

__all__ = ["evaluate_on_texts", "evaluate_text_model"]

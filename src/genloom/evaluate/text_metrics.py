"""Figures of generated text against real text (diversity, memorisation, embedding distance,
reference scores, control accuracy): implemented in ``genloom.models.text_metrics``, which the
text families' ``evaluate`` calls (``models`` sits below ``evaluate`` in the layer contract);
re-exported here for callers of the evaluation package."""

from genloom.models.text_metrics import (
    CopyReport,
    NgramIndex,
    TextEncoder,
    control_accuracy,
    distinct_n,
    frechet_distance,
    length_stats,
    mauve_score,
    memorisation,
    ngram_hashes,
    read_references,
    reference_scores,
    repetition_rate,
    self_bleu,
    words,
)

__all__ = [
    "CopyReport",
    "NgramIndex",
    "TextEncoder",
    "control_accuracy",
    "distinct_n",
    "frechet_distance",
    "length_stats",
    "mauve_score",
    "memorisation",
    "ngram_hashes",
    "read_references",
    "reference_scores",
    "repetition_rate",
    "self_bleu",
    "words",
]

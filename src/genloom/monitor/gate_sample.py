"""The evaluation gates on a sample of what the champion served: the pipeline's ``evaluate.gates``
on the figures a window's outputs alone give.

The evaluate stage scores a seeded sample of the model's own generations (``evaluate.samples``,
64 by default) for diversity and repetition; the same figures of a sample of the window's served
outputs (``genloom monitor``'s window, a day by default) show whether the model still meets its
gates on real traffic: a model that loops or collapses to one reply under real prompts fails
``repetition_4`` or ``distinct_2`` there first. Only the figures computed from the outputs alone
are checked here (``distinct_1/2/3``, ``repetition_4``, ``self_bleu``); gated metrics that need
held-out data or the training index (``val_bpc``, ``copy_rate``, ``embed_frechet``...) are
left out (no check). A relative bound (``min_vs_champion``...) is against the
champion's own figure from its evaluation, so a sample that falls behind what the model did at
evaluation time breaches it.
"""

from __future__ import annotations

from typing import Any

from genloom.core.errors import MissingDependencyError
from genloom.evaluate.gates import check_gates
from genloom.monitor.signals import Check

#: figures of served outputs alone, as ``evaluate_generations`` computes them on its sample
OUTPUT_FIGURES = ("distinct_1", "distinct_2", "distinct_3", "repetition_4", "self_bleu")
#: outputs of the window scored (a seeded reservoir, as the evaluate stage's default sample)
GATE_SAMPLE = 64
#: outputs a window needs before its figures are checked
MIN_OUTPUTS = 20


def output_figures(outputs: list[str]) -> tuple[dict[str, float | None], dict[str, str]]:
    """(distinct-1/2/3, 4-gram repetition and self-BLEU of ``outputs``, the figures that could not
    be computed and why)."""
    from genloom.models import text_metrics as tm

    figures: dict[str, float | None] = {f"distinct_{n}": tm.distinct_n(outputs, n) for n in (1, 2, 3)}
    figures["repetition_4"] = tm.repetition_rate(outputs, 4)
    skipped: dict[str, str] = {}
    try:
        figures["self_bleu"] = tm.self_bleu(outputs)
    except MissingDependencyError as e:
        figures["self_bleu"], skipped["self_bleu"] = None, str(e)
    return figures, skipped


def gate_sample_checks(
    outputs: list[str],
    gates: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    sampled_from: int,
    min_outputs: int = MIN_OUTPUTS,
) -> list[Check]:
    """One ``quality`` check per gated metric (signal ``gate:<metric>``, method ``gate``): the
    figure of the sampled ``outputs`` against every bound of the gate (``threshold``: the first
    bound that failed, else the first bound). ``sampled_from``: the window's outputs the sample was
    drawn from (evidence)."""
    if not gates:
        return []
    texts = [o for o in outputs if o and o.strip()]
    checks: list[Check] = []
    scored = {m: g for m, g in gates.items() if m in OUTPUT_FIGURES}  # the rest need held-out data
    if not scored:
        return checks
    if len(texts) < min_outputs:
        why = f"{len(texts)} non-empty outputs sampled in the window (at least {min_outputs} needed)"
        return checks + [_skipped(m, why) for m in sorted(scored)]
    figures, unavailable = output_figures(texts)
    table = check_gates(figures, scored, champion_metrics)
    for metric in sorted(scored):
        row = table[metric]
        if metric in unavailable:
            checks.append(_skipped(metric, unavailable[metric]))
            continue
        bounds = [c for c in row["checks"] if c["bound"] is not None]
        failed = [c for c in bounds if not c["passed"]]
        shown = (failed or bounds or [{"bound": None}])[0]
        evidence = {
            "sample": len(texts),
            "sampled_from": sampled_from,
            "champion_at_evaluation": row["champion"],
            "bounds": row["checks"],
        }
        checks.append(
            Check(
                "quality",
                f"gate:{metric}",
                "gate",
                row["value"],
                shown["bound"],
                not row["passed"],
                None,
                evidence,
            )
        )
    return checks


class GateSampleCheck:
    """The gates on a window's sampled outputs (a ``run_checks`` sample check): at most
    ``GATE_SAMPLE`` of the window's reservoir of text requests, seeded."""

    def __init__(self, gates: dict[str, Any], metrics: dict[str, Any]) -> None:
        self.gates, self.metrics = gates, metrics

    def __call__(self, acc: Any, th: Any) -> list[Check]:
        import numpy as np

        from genloom.monitor.signals import window_texts

        outputs = [o for o in window_texts(acc.sample)[1] if o.strip()]
        if len(outputs) > GATE_SAMPLE:
            keep = np.sort(np.random.default_rng(0).choice(len(outputs), GATE_SAMPLE, replace=False))
            outputs = [outputs[i] for i in keep]
        return gate_sample_checks(outputs, self.gates, self.metrics, sampled_from=acc.sample_seen)


def _skipped(metric: str, why: str) -> Check:
    return Check("quality", f"gate:{metric}", "gate", None, None, False, None, {"skipped": why}, why)


__all__ = [
    "GATE_SAMPLE",
    "GateSampleCheck",
    "MIN_OUTPUTS",
    "OUTPUT_FIGURES",
    "gate_sample_checks",
    "output_figures",
]

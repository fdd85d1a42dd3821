"""Drift statistics on data small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genloom.core.errors import GenloomError
from genloom.monitor.drift import bin_counts, category_counts, chi2, js, ks, psi, psi_from_counts


def test_psi_by_hand():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    want = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi_from_counts([50, 50], [25, 75]) == pytest.approx(want)
    assert psi_from_counts([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    with pytest.raises(GenloomError):
        psi_from_counts([1, 2], [0, 0])


def test_psi_on_samples_uses_reference_bins():
    ref = np.arange(100.0)
    assert bin_counts([0, 49.5, 50, 99, 1000], np.array([49.5])).tolist() == [2, 3]
    same = psi(ref, ref, bins=4)
    assert same.score == pytest.approx(0.0) and len(same.evidence["edges"]) == 3
    shifted = psi(ref, ref + 200, bins=4)  # everything lands in the top bin
    assert shifted.score > 5 and shifted.evidence["counts"] == [0, 0, 0, 100]


def test_ks_by_hand():
    r = ks([1, 2, 3, 4], [3, 4, 5, 6])  # ECDF gap is 0.5 (at 2 and at 4)
    assert r.score == pytest.approx(0.5) and 0 < r.p_value <= 1
    far = ks(np.arange(50.0), np.arange(50.0) + 100)
    assert far.score == pytest.approx(1.0) and far.p_value < 1e-10
    assert ks([1, 2, 3], [1, 2, 3]).score == pytest.approx(0.0)


def test_js_by_hand():
    assert js({"en": 5}, {"en": 7}).score == pytest.approx(0.0)
    assert js({"en": 5}, {"fr": 5}).score == pytest.approx(1.0)
    # p=(1,0), q=(.5,.5): m=(.75,.25); KL(p||m)=log2(4/3); KL(q||m)=.5log2(2/3)+.5log2(2)
    div = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert js({"en": 2}, {"en": 1, "fr": 1}).score == pytest.approx(math.sqrt(div))
    assert category_counts(["en", "fr", "en"]) == {"en": 2, "fr": 1}


def test_chi2_by_hand():
    # 2x2 table [[10, 10], [20, 0]]: expected [[15, 5], [15, 5]] -> 25/15+25/5+25/15+25/5
    r = chi2({"a": 10, "b": 10}, {"a": 20})
    assert r.score == pytest.approx(25 / 15 * 2 + 5 * 2) and r.evidence["dof"] == 1
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(r.score / 2)))
    same = chi2({"a": 10, "b": 30}, {"a": 1, "b": 3})
    assert same.score == pytest.approx(0.0) and same.p_value == pytest.approx(1.0)

"""NAB scoring against values worked out by hand from the method NAB v1.1 publishes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vigil.evaluation.nab_score import Labelled, Profile, probation, sweep

STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)

# 100 rows: the first 15 are probation; windows are rows 20-29 and 60-69 (width 10).
FILE = Labelled("toy.csv", 100, ((20, 29), (60, 69)))


def flagged(rows: list[int], n: int = 100) -> np.ndarray:
    scores = np.zeros(n)
    scores[rows] = 1.0
    return scores


def score(files: list[Labelled], flags: list[np.ndarray], profile: Profile = STANDARD,
          ) -> float:
    return sweep(files, flags, profile).at(1.0)


def test_probation_is_15_percent_capped_at_750() -> None:
    assert probation(100) == 15
    assert probation(4032) == 604
    assert probation(22695) == 750


@pytest.mark.parametrize("profile", [STANDARD, LOW_FN])
def test_flagging_nothing_scores_zero(profile: Profile) -> None:
    assert score([FILE], [flagged([])], profile) == pytest.approx(0.0)


@pytest.mark.parametrize("profile", [STANDARD, LOW_FN])
def test_flagging_each_windows_first_row_scores_100(profile: Profile) -> None:
    assert score([FILE], [flagged([20, 60])], profile) == pytest.approx(100.0)


def test_two_windows_an_early_hit_a_late_hit_and_a_false_positive() -> None:
    def nab_sigma(y: float) -> float:  # written out again from the published formula
        return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0

    early = 1.0  # the window's first row: sigma(-1) / sigma(-1)
    late = nab_sigma(-(69 - 68 + 1) / 10) / nab_sigma(-1.0)  # 0.468387
    false_positive = 0.11 * nab_sigma(abs(29 - 40) / (10 - 1))  # 11 rows past a 10-row window
    total = early + late + false_positive
    expected = 100 * (total - (-2.0)) / (2.0 - (-2.0))
    assert late == pytest.approx(0.468387, abs=1e-6)
    assert false_positive == pytest.approx(-0.109513, abs=1e-6)
    assert expected == pytest.approx(83.9719, abs=1e-3)
    # Later rows of an already-hit window change nothing; row 40 is the false positive.
    assert score([FILE], [flagged([20, 22, 29, 40, 68, 69])]) == pytest.approx(expected)


def test_probation_rows_and_false_positives_before_any_window() -> None:
    # A flag in probation is not scored; one before the first window costs the full A_fp.
    assert score([FILE], [flagged([3])]) == pytest.approx(0.0)
    assert score([FILE], [flagged([16])]) == pytest.approx(100 * (-0.11 + 2.0) / 4.0 - 50.0)


def test_one_threshold_is_chosen_for_the_whole_corpus() -> None:
    # File a: the window's first row scores 0.9, a false positive 0.8 far after it.
    # File b: its window's first row scores 0.7. Threshold 0.7 catches both windows and
    # pays one false positive; that beats 0.9 (one window) for the corpus.
    a = Labelled("a.csv", 100, ((20, 29),))
    b = Labelled("b.csv", 100, ((50, 59),))
    scores_a, scores_b = np.zeros(100), np.zeros(100)
    scores_a[20], scores_a[90] = 0.9, 0.8
    scores_b[50] = 0.7
    result = sweep([a, b], [scores_a, scores_b], STANDARD)
    threshold, best = result.best()
    assert threshold == pytest.approx(0.7)
    assert best == pytest.approx(100 * (2.0 - 0.11 + 2.0) / 4.0)
    assert result.at(0.9) == pytest.approx(100 * (1.0 - 1.0 + 2.0) / 4.0)

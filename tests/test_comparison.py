"""The paired t interval against a hand-worked example; Student's t quantiles against the printed table."""

from __future__ import annotations

import pytest

from mnist_logreg.sweeps.comparison import paired_difference, t_quantile


@pytest.mark.parametrize(
    ("df", "expected"),  # two-sided 95%, as printed in any t table
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (9, 2.262), (10, 2.228), (30, 2.042)],
)
def test_t_quantiles_match_the_table(df: int, expected: float) -> None:
    assert t_quantile(df) == pytest.approx(expected, abs=5e-4)


def test_the_paired_interval_matches_the_hand_worked_example() -> None:
    # Five folds, val/acc of configuration A and B on each:
    #   A: 0.91 0.92 0.90 0.93 0.94        B: 0.90 0.90 0.89 0.92 0.91
    #   d = A - B: 0.01 0.02 0.01 0.01 0.03           mean d = 0.08 / 5 = 0.016
    #   d - mean: -0.006 0.004 -0.006 -0.006 0.014    squares sum to 320e-6
    #   sd = sqrt(320e-6 / 4) = sqrt(80e-6) = 0.0089443;  se = sd / sqrt(5) = sqrt(16e-6) = 0.004
    #   t(0.975, df 4) = 2.7764;  half width = 2.7764 * 0.004 = 0.011106
    #   interval: 0.016 - 0.011106 = 0.004894  to  0.016 + 0.011106 = 0.027106: excludes 0, A is higher
    difference = paired_difference([0.91, 0.92, 0.90, 0.93, 0.94], [0.90, 0.90, 0.89, 0.92, 0.91])
    assert difference.n == 5
    assert difference.mean == pytest.approx(0.016, abs=1e-12)
    assert (difference.low, difference.high) == (
        pytest.approx(0.004894, abs=1e-6),
        pytest.approx(0.027106, abs=1e-6),
    )
    assert difference.interval() == "+0.0160 [+0.0049, +0.0271]"
    assert difference.distinguishable and difference.verdict("A", "B") == "A is higher than B"
    # B - A: the same interval, mirrored.
    mirrored = paired_difference([0.90, 0.90, 0.89, 0.92, 0.91], [0.91, 0.92, 0.90, 0.93, 0.94])
    assert mirrored.verdict("B", "A") == "B is lower than A"


def test_an_interval_containing_zero_says_the_two_cannot_be_told_apart() -> None:
    # d = 0.01 -0.01 0.01 -0.01 0.01: mean 0.002, sd = sqrt(480e-6 / 4) = 0.010954, se = 0.004899,
    # half width = 2.7764 * 0.004899 = 0.013602: -0.011602 to 0.015602.
    difference = paired_difference([0.92, 0.91, 0.92, 0.91, 0.92], [0.91, 0.92, 0.91, 0.92, 0.91])
    assert difference.low == pytest.approx(-0.011602, abs=1e-6) and difference.high == pytest.approx(
        0.015602, abs=1e-6
    )
    assert not difference.distinguishable
    assert difference.verdict() == "cannot be told apart (the interval contains 0)"


def test_one_pair_gives_no_interval() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_difference([0.9], [0.8])

"""Stratified validation splits on a label tensor: k folds, and fold i as validation."""

from __future__ import annotations

import pytest
import torch

from mnist_logreg.core.splits import fold_split, stratified_folds, stratified_fractions
from mnist_logreg.errors import UserError


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    """60,000 labels with MNIST's uneven class sizes (5,421 fives to 6,742 ones), in a shuffled order."""
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    labels = torch.cat([torch.full((n,), digit) for digit, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(7))]


def proportions(labels: torch.Tensor) -> torch.Tensor:
    return torch.bincount(labels, minlength=10).double() / len(labels)


def test_folds_are_disjoint_cover_the_training_split_and_keep_label_proportions(labels: torch.Tensor) -> None:
    folds = stratified_folds(labels, 5, seed=0)
    every = torch.cat(folds)
    assert len(every) == len(labels) == len(set(every.tolist()))  # disjoint, and together every sample
    assert {len(f) for f in folds} == {12_000}
    for fold in folds:
        assert (proportions(labels[fold]) - proportions(labels)).abs().max() < 0.01
        # Closer than that: each class's count within one of its share.
        share = torch.bincount(labels, minlength=10) / 5
        assert (torch.bincount(labels[fold], minlength=10) - share).abs().max() <= 1


def test_fold_i_validates_and_the_other_folds_train(labels: torch.Tensor) -> None:
    folds = stratified_folds(labels, 3, seed=0)
    train, val = fold_split(labels, 3, 1, seed=0)
    assert torch.equal(val, folds[1])
    assert torch.equal(train, torch.cat([folds[0], folds[2]]).sort().values)
    assert not set(train.tolist()) & set(val.tolist())


def test_folds_follow_their_seed_alone(labels: torch.Tensor) -> None:
    again = stratified_folds(labels, 5, seed=0)
    torch.manual_seed(123)  # the global seed (training's) does not move the split
    assert all(torch.equal(a, b) for a, b in zip(again, stratified_folds(labels, 5, seed=0), strict=True))
    assert not torch.equal(again[0], stratified_folds(labels, 5, seed=1)[0])


def test_uneven_folds_differ_by_one_at_most() -> None:
    labels = torch.tensor([0] * 7 + [1] * 4)
    sizes = sorted(len(f) for f in stratified_folds(labels, 3, seed=0))
    assert sizes == [3, 4, 4]


def test_fractions_of_each_class_go_to_their_splits_the_rest_to_train(labels: torch.Tensor) -> None:
    fractions = {"val": 0.1, "test": 0.2}
    parts = stratified_fractions(labels, fractions, seed=0)
    every = torch.cat(list(parts.values()))
    assert len(every) == len(labels) == len(set(every.tolist()))  # disjoint, and together every sample
    counts = torch.bincount(labels, minlength=10)
    for split, fraction in fractions.items():
        share = (counts * fraction).round().long()
        assert torch.equal(torch.bincount(labels[parts[split]], minlength=10), share)
    assert all(torch.equal(p, p.sort().values) for p in parts.values())  # in the listing's order
    again = stratified_fractions(labels, fractions, seed=0)
    assert all(torch.equal(parts[s], again[s]) for s in parts)
    assert not torch.equal(parts["val"], stratified_fractions(labels, fractions, seed=1)["val"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda y: stratified_folds(y, 1, 0), r"^data\.folds=1 is invalid: it must be from 2 to the 4"),
    ],
)
def test_impossible_splits_are_refused_in_one_line(call, message: str) -> None:
    with pytest.raises(UserError, match=message):
        call(torch.tensor([0, 1, 0, 1]))

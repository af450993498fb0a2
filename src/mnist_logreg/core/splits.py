"""Validation splits drawn from a label tensor, stratified by label and seeded apart from training.

Any data module can use them: they take the labels of its training images and return sample indices.

- `stratified_folds`: K disjoint folds that together hold every sample, each with the labels in the whole
  set's proportions (every class's count in a fold is within one of its count / K);
- `fold_split`: fold `i` of those as the validation split, the other K - 1 folds as the training split;
- `stratified_fractions`: a fraction of every class to each named split (an image folder's validation and
  test splits), the rest to training.

The same labels, seed and K give the same folds on any machine: the draws come from a torch generator on the
CPU, seeded by `seed` alone, so the split does not move when the training seed does.
"""

from __future__ import annotations

import torch

from mnist_logreg.errors import UserError


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """`folds` disjoint index tensors covering `range(len(labels))`, each stratified by label.

    Each class's samples, in a seeded random order, are dealt out in turn to the folds, the classes one after
    another: so every fold gets its share of every class (within one sample), and the folds' sizes differ by
    at most one.
    """
    if not 2 <= folds <= len(labels):
        raise UserError(
            f"data.folds={folds} is invalid: it must be from 2 to the {len(labels)} training samples."
        )
    dealt = _class_by_class(labels, seed)
    fold_of = torch.empty(len(labels), dtype=torch.long)
    fold_of[dealt] = torch.arange(len(labels)) % folds
    return [torch.nonzero(fold_of == fold).flatten() for fold in range(folds)]


def fold_split(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(train indices, validation indices)`: fold `fold` of `stratified_folds` validates, the rest train."""
    parts = stratified_folds(labels, folds, seed)
    val = parts[fold]
    train = torch.cat([part for i, part in enumerate(parts) if i != fold]).sort().values
    return train, val


def stratified_fractions(
    labels: torch.Tensor, fractions: dict[str, float], seed: int
) -> dict[str, torch.Tensor]:
    """`{"train": indices, **{split: indices for split in fractions}}`: of each class, in a seeded random
    order, `fraction` of its samples (rounded) go to each split, the rest to `train`. Indices sorted; a split
    may be empty where a class is too small, which the caller judges."""
    picked: dict[str, list[torch.Tensor]] = {split: [] for split in ("train", *fractions)}
    for members in _shuffled_classes(labels, seed):
        start = 0
        for split, fraction in fractions.items():
            count = round(len(members) * fraction)
            picked[split].append(members[start : start + count])
            start += count
        picked["train"].append(members[start:])
    return {split: torch.cat(parts).sort().values for split, parts in picked.items()}


def _class_by_class(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Every sample index once: class 0's in a seeded random order, then class 1's, and so on."""
    return torch.cat(_shuffled_classes(labels, seed))


def _shuffled_classes(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Each class's sample indices in a random order drawn from `seed`, the classes in ascending order."""
    generator = torch.Generator().manual_seed(seed)
    return [
        members[torch.randperm(len(members), generator=generator)]
        for members in (torch.nonzero(labels == label).flatten() for label in torch.unique(labels))
    ]

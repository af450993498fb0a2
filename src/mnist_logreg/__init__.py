"""Multinomial logistic regression on MNIST with PyTorch Lightning and Hydra."""

from mnist_logreg.naming import register_resolvers

# Before Hydra composes a config, in every process that does: the entry points, and the jobs that a
# launcher starts elsewhere (they import this package to run the task).
register_resolvers()

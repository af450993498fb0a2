"""Sweeps and searches: the Optuna study and its workers' liveness, the sweep summary, its plots, and the
command that reports on a sweep (`python -m mnist_logreg.sweeps DIR`)."""

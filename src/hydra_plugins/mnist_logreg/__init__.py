"""This project's Hydra plugins: the Optuna sweeper and the `unique_dir` resolver for output directories.

Hydra imports every module under the `hydra_plugins` namespace when it starts, before it composes a config,
in every process it runs jobs in: what is defined here is there for every entry point and launcher.
"""

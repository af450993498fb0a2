"""This project's Hydra plugin, the Optuna sweeper: Hydra finds plugins only under `hydra_plugins`."""

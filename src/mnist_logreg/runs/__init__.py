"""A Hydra job made a Lightning run: config checks, assembly of data, model and trainer, train, eval and
find_lr, resuming, the job guard and the run directory's lock, the console."""

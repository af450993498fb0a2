"""Errors a user can cause and fix: reported as one line that says what to do, not as a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserError(Exception):
    """A bad config value, a missing or corrupt file, a bad checkpoint path: the message names the fix."""


def report_user_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Wrap a Hydra task so that a `UserError` ends a single run with its message and exit status 2.

    In a multirun the error is raised on, so that the launcher records the job as failed and runs the rest.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except UserError as error:
            log.error("%s", error)
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            sys.exit(2)

    return wrapper

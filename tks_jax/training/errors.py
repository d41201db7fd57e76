"""The training errors a user can act on, and the exit code ``train.py`` gives each.

Every error here carries a message that says what went wrong and what to do; the command-line
entry points print it on one line and exit with ``exit_code`` (README "Failure handling").
Errors that are not listed here are bugs: they end with a traceback and exit code 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a Python traceback: a bug or an environment problem not foreseen here
EXIT_USAGE = 2  # bad flags, config, paths or an incompatible workdir: fix the command
EXIT_LOCKED = 3  # another run holds the workdir: wait for it or use another --workdir
EXIT_NON_FINITE = 4  # NaN/inf loss or parameters: see --config.resume_with_changes
EXIT_NO_CHECKPOINT = 5  # no checkpoint of the run restores: see the listed reasons
EXIT_DISK_FULL = 6  # no space left: free space and re-run (resumes)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after saving; re-run to resume


class TrainingError(Exception):
    """Base class of the errors the entry points report in one line (no traceback)."""

    exit_code = EXIT_USAGE


class ConfigError(TrainingError, ValueError):
    """A config, flag or path that cannot work; nothing in the workdir was changed."""

    exit_code = EXIT_USAGE


class WorkdirError(TrainingError, ValueError):
    """The workdir holds a run this command must not continue or replace."""

    exit_code = EXIT_USAGE


class WorkdirLockedError(TrainingError):
    """Another live process holds the workdir's lock."""

    exit_code = EXIT_LOCKED


class NonFiniteLossError(TrainingError, RuntimeError):
    """A train step produced a non-finite loss or gradient."""

    exit_code = EXIT_NON_FINITE


class NonFiniteParamsError(TrainingError, ValueError):
    """Evaluation met non-finite parameters or logits."""

    exit_code = EXIT_NON_FINITE


class CheckpointRestoreError(TrainingError, RuntimeError):
    """No checkpoint of the run restores (each step's reason is in the message)."""

    exit_code = EXIT_NO_CHECKPOINT


class DiskFullError(TrainingError, OSError):
    """A write failed with ENOSPC; partial files were removed."""

    exit_code = EXIT_DISK_FULL

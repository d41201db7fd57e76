"""Shared by the command-line entry points (``train.py``, ``tks_jax.evaluate``): flag parsing
that turns mistakes into one line naming the flag, config field or path, and the one-line
report of the project's errors with their exit codes (``tks_jax.training.errors``)."""

from __future__ import annotations

import os
import re
import sys

from absl import flags, logging

from tks_jax.training import errors


def fail(error: BaseException | str, code: int | None = None, *, log: bool = True) -> int:
    """Logs and prints ``error: <message>`` on one line; returns the exit code."""
    message = " ".join(str(error).split())
    if log:
        logging.error("%s", message)
    print(f"error: {message}", file=sys.stderr)
    return code if code is not None else getattr(error, "exit_code", errors.EXIT_USAGE)


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _load_config(path: str):
    """The config of a config file (``path[:arg]``) without touching flags; None on failure."""
    import importlib.util

    file, _, arg = path.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_tks_config_for_hint", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # only used to suggest names; the real load reports its own errors
        return None


def config_error(argv: list[str], error: Exception) -> str | None:
    """A one-line message for a bad ``--config`` path or ``--config.<field>``, else None."""
    path = _flag_value(argv, "config")
    if path is not None:
        file = path.partition(":")[0]
        if not os.path.isfile(file):
            return f"config file {file!r} not found (--config); pass a configs/*.py file."
    if not isinstance(error, AttributeError | KeyError | flags.Error):
        return None
    # The bad name is the first quoted word of the message; find the override holding it.
    found = re.search(r"'([A-Za-z_][A-Za-z0-9_.]*)", str(error))
    name = found.group(1).rsplit(".", 1)[-1] if found else ""
    overrides = [a[2:].split("=")[0] for a in argv if a.startswith("--config.")]
    field = next((o for o in overrides if name and name in o.split(".")), None)
    if field is None:
        field = next((o for o in overrides if name and o.endswith(name)), None)
    if field is None:
        return None
    field = field.removeprefix("config.")
    config = _load_config(path) if path else None
    from tks_jax.training import config_lib

    close = config_lib.closest_keys(config, field) if config is not None else []
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    return f"unknown config field {field!r} (--config.{field}).{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """``absl`` flag parsing whose errors print one line and exit with code 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # absl flag errors, and ml_collections' for --config.<field>
        message = config_error(argv, e) or f"{type(e).__name__}: {e}"
        sys.exit(fail(message, errors.EXIT_USAGE, log=False))


def load_config_flag(holder, argv: list[str]):
    """``holder.value`` (a ``config_flags`` config); a bad file or field exits with code 2."""
    try:
        config = holder.value
        config.keys()  # a config that failed to load raises on first use: make that here
        return config
    except Exception as e:  # whatever loading the file or applying an override raised
        message = config_error(argv, e) or f"cannot load the config: {type(e).__name__}: {e}"
        sys.exit(fail(message, errors.EXIT_USAGE, log=False))


def finish(result: dict) -> int:
    """Prints the outcome of ``train_and_evaluate``; returns 0, or 75 if it was preempted."""
    if result["preempted"]:
        print(f"Stopped by SIGTERM at step {result['step']}; checkpoint saved. Re-run the same "
              f"command to resume (exit code {errors.EXIT_PREEMPTED}).")
        return errors.EXIT_PREEMPTED
    from tks_jax import report

    rep = report.load_report(result["report_dir"])
    print(report.format_markdown(rep))
    print(f"Report: {result['report_dir']}")
    return errors.EXIT_OK

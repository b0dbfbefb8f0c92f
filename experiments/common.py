"""The flags every experiment entry point shares, and their checks (absl + ml_collections).

Each entry (``python -m experiments.<name> --config=configs/<name>.py:<exp> --workdir=DIR
[--fold=N|N,M|all] [--config.x=y ...]``) defines its flags with ``define_flags`` at import and
turns them into the config to run with ``config_from_flags`` in its ``main``: as the flax
examples' ``main.py``, one module per experiment, the work itself in ``spoils_tf.train``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import ml_collections
from absl import app, flags
from ml_collections import config_flags


@dataclasses.dataclass(frozen=True)
class ExperimentFlags:
    """The absl flag holders of one entry point (``fold`` is None where it has none)."""

    config: flags.FlagHolder
    workdir: flags.FlagHolder
    fold: Optional[flags.FlagHolder]


def define_flags(config_example: str, *, fold: bool = True,
                 workdir_help: str = "output directory") -> ExperimentFlags:
    """Defines ``--config`` (an ml_collections config file, locked: overrides may only set
    fields that exist), ``--workdir`` (both required) and, with ``fold``, ``--fold``.

    Args:
        config_example: e.g. ``"configs/seg_unet.py:smoke"``, shown in ``--help``.
        fold: also define ``--fold``, which overrides ``config.fold``.
        workdir_help: the ``--workdir`` help text.
    """
    config = config_flags.DEFINE_config_file(
            "config", None, f"experiment config, e.g. {config_example}", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    fold_flag = None
    if fold:
        fold_flag = flags.DEFINE_string(
                "fold", None, "fold(s) to run: N, a list N,M, 'all', or 'final' (fixed-spacing "
                "segmentation: train on every patient) (default: config.fold)")
    flags.mark_flags_as_required(["config", "workdir"])
    return ExperimentFlags(config, workdir, fold_flag)


def config_from_flags(argv: list[str], f: ExperimentFlags) -> ml_collections.ConfigDict:
    """The config to run: ``--config`` with ``--fold`` applied; INFO logging switched on.

    Raises:
        app.UsageError: on positional arguments (a mistyped flag, e.g. ``-fold 3``).
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    config = f.config.value
    if f.fold is not None and f.fold.value is not None:
        config.fold = f.fold.value
    return config

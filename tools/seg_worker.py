"""``python -m experiments.seg`` with two hooks for tests of distributed training
(tests/test_distribute.py): the same flags, plus

* ``--weights_out=PATH``: at the end of each ``fit`` this process writes its model's weights
  (``weight_<i>`` arrays in ``model.weights`` order, ``.npz``), on every worker, chief or not;
* ``--die_at_epoch=N``: this process SIGKILLs itself at the start of epoch N (a lost machine:
  no exception, no clean-up).

    python tools/seg_worker.py --config=configs/seg_unet.py:smoke --fold=0 \\
        --strategy=mirrored --cpu_replicas=2 --workdir=/tmp/w --weights_out=/tmp/w.npz
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments import seg  # noqa: E402  (defines the experiments.seg flags)

_WEIGHTS_OUT = flags.DEFINE_string("weights_out", "", "write the final weights here (.npz)")
_DIE_AT_EPOCH = flags.DEFINE_integer("die_at_epoch", -1, "SIGKILL this process at the start "
                                     "of this epoch (-1 = never)")


def _callbacks() -> list:
    import keras
    import numpy as np

    from spoils_tf import fileio

    class Hooks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == _DIE_AT_EPOCH.value:
                print(f"seg_worker: killing myself (pid {os.getpid()}) at epoch {epoch}",
                      flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            if _WEIGHTS_OUT.value:
                arrays = {f"weight_{i}": np.asarray(w)
                          for i, w in enumerate(self.model.get_weights())}

                def write(tmp: str) -> None:
                    with open(tmp, "wb") as f:
                        np.savez(f, **arrays)
                fileio.atomic_write(_WEIGHTS_OUT.value, write)

    return [Hooks()]


def main(argv: list[str]) -> None:
    seg.train(argv, extra_callbacks=_callbacks())


if __name__ == "__main__":
    app.run(main)

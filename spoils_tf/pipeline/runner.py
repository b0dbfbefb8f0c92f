"""The pipeline runner: ExampleGen -> Trainer (+ classifiers) -> Evaluator -> Pusher, in one
``run_<n>`` directory per call, for ``experiments/pipeline.py``."""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import time
from typing import Any, Iterator, Mapping, Optional, Union

from spoils_tf import fileio
from spoils_tf.serve import bundle
from spoils_tf.data import layout
from spoils_tf.pipeline import artifacts as art
from spoils_tf.pipeline.classifier_trainer import train_classifiers
from spoils_tf.pipeline.common import CLASSIFIER_SHORT, ENSEMBLE, GRADE_PREFIX
from spoils_tf.pipeline.evaluator import evaluator
from spoils_tf.pipeline.example_gen import example_gen
from spoils_tf.pipeline.pusher import push_bundle, pusher
from spoils_tf.pipeline.trainer import trainer


@contextlib.contextmanager
def _timer(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Records the wall seconds of the ``with`` block as ``seconds[stage]`` (when it
    completes)."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start


def _next_run_dir(workdir: pathlib.Path) -> pathlib.Path:
    runs = [int(p.name[4:]) for p in workdir.glob("run_*") if p.name[4:].isdigit()]
    for n in range(max(runs, default=0) + 1, max(runs, default=0) + 1000):
        path = workdir / f"run_{n}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{workdir}: could not create a new run_<n> directory")


def _dataset_dir(config, workdir: pathlib.Path) -> pathlib.Path:
    """The configured dataset, or a synthetic cohort made once in ``workdir/synthetic``."""
    configured = str(config.examples.labelme_dir or "")
    if configured:
        return pathlib.Path(configured)
    out = workdir / "synthetic"
    if not (out / layout.LABELME_DIR).is_dir():
        from spoils_tf.data import synthetic   # PIL, OpenCV: not for importing the pipeline
        syn = config.examples.synthetic
        synthetic.write_complete_cohort(out, syn.patients, syn.slices_per_patient, syn.seed,
                                        size=syn.size, progress=False)
    return out


def _classifiers_enabled(config) -> bool:
    return "classifiers" in config and bool(config.classifiers.enabled)


def run_pipeline(config, workdir: Union[str, os.PathLike]) -> dict[str, Any]:
    """ExampleGen -> Trainer (+ classifiers) -> Evaluator -> Pusher (the Pusher only when blessed).

    Artifacts go to ``workdir/run_<n>/{ExampleGen,Trainer,Evaluator}`` (a new ``n`` per call)
    and, when ``config.classifiers.enabled``, ``workdir/run_<n>/Trainer_classifiers/``
    (:func:`train_classifiers`); the Evaluator then scores and blesses all three models and
    the Pusher publishes them as one bundle (:func:`push_bundle`) under
    ``config.pusher.base_dir`` ("" = ``workdir/serving``), which must then use the bundle's
    segmentation name (``config.pusher.model_name == bundle.SEG``).

    Returns:
        ``{"run_dir", "examples", "model", "classifiers" ({name: Model}, {} when disabled),
        "evaluation", "blessing", "pushed" (the segmentation PushedModel, None when not
        blessed), "pushed_bundle" ({name: PushedModel}, {} when not blessed), "seconds":
        {stage: wall seconds}}``.

    Raises:
        ValueError: classifiers enabled with ``pusher.model_name`` other than ``bundle.SEG``
            (checked before any work).
    """
    with_classifiers = _classifiers_enabled(config)
    if with_classifiers and str(config.pusher.model_name) != bundle.SEG:
        raise ValueError(f"config.pusher.model_name is {config.pusher.model_name!r}; with "
                         f"classifiers the bundle layout needs {bundle.SEG!r} "
                         "(spoils_tf.serve.bundle), or set --config.classifiers.enabled=False")
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = _next_run_dir(workdir)
    seconds: dict[str, float] = {}
    with _timer(seconds, "ExampleGen"):
        dataset = _dataset_dir(config, workdir)
        e = config.examples
        examples = example_gen(dataset, run_dir / "ExampleGen", k=int(e.k), seed=int(e.seed),
                               eval_fold=int(e.eval_fold), tfds_config=str(e.tfds_config))
    with _timer(seconds, "Trainer"):
        model = trainer(examples, config.trainer, run_dir / "Trainer")
    classifiers: dict[str, art.Model] = {}
    if with_classifiers:
        with _timer(seconds, "Trainer_classifiers"):
            classifiers = train_classifiers(examples, config.classifiers,
                                            run_dir / "Trainer_classifiers")
    with _timer(seconds, "Evaluator"):
        evaluation, blessing = evaluator(model, examples, config.evaluator.thresholds,
                                         run_dir / "Evaluator", classifiers=classifiers)
    pushed, pushed_bundle = None, {}
    if blessing.blessed:
        with _timer(seconds, "Pusher"):
            base = pathlib.Path(config.pusher.base_dir or workdir / "serving")
            if with_classifiers:
                pushed_bundle = push_bundle({bundle.SEG: model, **classifiers}, blessing, base,
                                            evaluation=evaluation)
                pushed = pushed_bundle[bundle.SEG]
            else:
                pushed = pusher(model, blessing, base, str(config.pusher.model_name),
                                evaluation=evaluation)
                pushed_bundle = {str(config.pusher.model_name): pushed}
    fileio.write_json(run_dir / "run_summary.json", fileio.json_safe(
            {"examples": examples.uri, "model": model.uri,
             "classifiers": {n: m.uri for n, m in classifiers.items()},
             "evaluation": evaluation.uri, "blessing": blessing.uri,
             "blessed": blessing.blessed, "failed": list(blessing.failed),
             "pushed": pushed.uri if pushed else None,
             "pushed_bundle": {n: p.uri for n, p in pushed_bundle.items()},
             "seconds": seconds}))
    return {"run_dir": run_dir, "examples": examples, "model": model,
            "classifiers": classifiers, "evaluation": evaluation, "blessing": blessing,
            "pushed": pushed, "pushed_bundle": pushed_bundle, "seconds": seconds}


def summary_text(result: Mapping[str, Any]) -> str:
    """Human-readable summary of :func:`run_pipeline`'s result (artifact paths, metrics)."""
    ex, model, ev, bl, pushed = (result[k] for k in ("examples", "model", "evaluation",
                                                      "blessing", "pushed"))
    m = ev.metrics
    lines = [
            f"run: {result['run_dir']}",
            f"ExampleGen  {ex.uri}",
            f"  {ex.metrics['patients']} patients, {ex.metrics['slices']} slices, "
            f"{ex.metrics['bad_files']} bad file(s); eval fold {ex.eval_fold} "
            f"({len(ex.eval_patients)} patients); data sha256 {ex.fingerprint['sha256'][:16]}...",
            f"Trainer     {model.uri}",
            f"  {model.config.get('model', {}).get('name', '?')}: "
            f"{model.metrics.get('train_seconds', float('nan')):.1f} s, loss "
            f"{model.metrics.get('train_loss_first', float('nan')):.4f} -> "
            f"{model.metrics.get('train_loss_last', float('nan')):.4f}",
    ]
    for name, c in result.get("classifiers", {}).items():
        what = c.card.get("model_name") or c.card.get("backbone", "?")
        rows = c.metrics.get("train_rows", c.metrics.get("train_crops", 0))
        lines.append(f"  {name} ({what}): {int(rows)} training discs, "
                     f"{c.metrics.get('train_seconds', float('nan')):.1f} s -> {c.uri}")
    lines += [
            f"Evaluator   {ev.uri}",
            f"  {int(m.get('slices', 0))} held-out slices: pixel accuracy "
            f"{_fmt(m.get('pixel_accuracy'))}, Dice fg-macro {_fmt(m.get('dice/fg_macro'))}, "
            f"level accuracy {_fmt(m.get('level_accuracy'))}",
    ]
    for short in [*CLASSIFIER_SHORT.values(), ENSEMBLE]:
        key = f"{GRADE_PREFIX}/{short}"
        if f"{key}/n" in m:
            lines.append(f"  grade {short}: {int(m[f'{key}/n'] or 0)} held-out discs, accuracy "
                         f"{_fmt(m.get(f'{key}/accuracy'))}, IoU macro "
                         f"{_fmt(m.get(f'{key}/iou_macro'))}, F1 macro "
                         f"{_fmt(m.get(f'{key}/f1_macro'))}")
    lines.append(f"  blessing {bl.uri}: {'BLESSED' if bl.blessed else 'NOT blessed'}"
                 + ("" if bl.blessed else f" ({'; '.join(bl.failed)})"))
    pushed_bundle = result.get("pushed_bundle") or {}
    if pushed_bundle:
        for name, p in pushed_bundle.items():
            lines.append(f"Pusher      {p.uri} (version {p.version})")
    elif pushed:
        lines.append(f"Pusher      {pushed.uri} (version {pushed.version})")
    else:
        lines.append("Pusher      skipped: not blessed, nothing pushed")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return "\n".join(lines)


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.4f}"

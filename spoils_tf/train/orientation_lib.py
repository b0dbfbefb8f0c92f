"""Training and patient-grouped cross-validation of the orientation network.

``run(config, workdir)`` trains ``spoils_tf.models.orientation.build_orientation_net`` on every
slice of the training patients, each drawn in a random one of the four flips of
``levels.ORIENTATIONS`` (the label) with geometric and intensity augmentation, and scores the
held-out patients' slices in all four flips. ``--fold=final`` trains on every patient: the model
that is shipped.

Outputs under ``workdir``: ``slices.npz`` (the prepared canvases, reused), per fold
``fold_<k>/model.keras`` and ``fold_<k>/metrics.json`` (written as each fold ends; a fold with
its metrics is skipped on a rerun), ``cv_summary.json`` and ``cv_table.md``.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np

from spoils_tf import fileio, levels
from spoils_tf.models import orientation as orientation_net

OUTCOMES = ("right", "refused", "wrong")


# === Data ===
def prepare_slices(labelme_dir: str | pathlib.Path, tfds_dir: str | pathlib.Path,
                   cache: pathlib.Path, *, pixel_mm: float, canvas: int) -> dict[str, np.ndarray]:
    """Every slice of the dataset as a network canvas, cached in ``cache`` (npz).

    Returns:
        ``{"x": float16 [N, canvas, canvas], "patient": str [N], "slice": int [N],
        "key": str [N]}``.
    """
    if cache.is_file():
        with np.load(cache) as z:
            if z["x"].shape[1:] == (canvas, canvas) and float(z["pixel_mm"]) == pixel_mm:
                return {k: z[k] for k in ("x", "patient", "slice", "key")}
    from tqdm.auto import tqdm

    from spoils_tf.data import tfds_builder
    examples, info = tfds_builder.load_dataset(labelme_dir, tfds_dir, "spider")
    xs, patients, slices, keys = [], [], [], []
    for ex in tqdm(examples.as_numpy_iterator(), total=info.splits["train"].num_examples,
                   desc="prepare slices", unit="slice"):
        xs.append(orientation_net.prepare(ex["image"][..., 0], ex["pixel_spacing_mm"],
                                          pixel_mm=pixel_mm, canvas=canvas).astype(np.float16))
        patients.append(ex["patient"].decode())
        slices.append(int(ex["slice"]))
        keys.append(ex["key"].decode())
    data = {"x": np.stack(xs), "patient": np.asarray(patients), "slice": np.asarray(slices),
            "key": np.asarray(keys)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(tmp, pixel_mm=pixel_mm, **data)
    tmp.replace(cache)
    return data


def middle_mask(data: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """bool [N]: the ``n`` slices nearest each patient's middle slice index."""
    from spoils_tf.train import seg_spacing_lib
    by_patient: dict[str, list[tuple[int, str]]] = {}
    for p, s, k in zip(data["patient"], data["slice"], data["key"]):
        by_patient.setdefault(str(p), []).append((int(s), str(k)))
    keep = seg_spacing_lib.middle_keys(by_patient, n)
    return np.asarray([str(k) in keep for k in data["key"]])


# === Augmentation (tf.data) ===
def _augment_fn(aug: Mapping[str, Any], canvas: int, seed: int):
    """``(x float32 [canvas, canvas]) -> (x' [canvas, canvas, 1], label int32)``: a random flip
    of ``levels.ORIENTATIONS`` (the label), then affine, bias field, gamma, blur and noise."""
    import keras
    import tensorflow as tf
    geometric = keras.Sequential([
            keras.layers.RandomRotation(float(aug["rotation_deg"]) / 360.0, fill_mode="constant",
                                        seed=seed),
            keras.layers.RandomZoom(float(aug["zoom"]), fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(float(aug["shift"]), float(aug["shift"]),
                                           fill_mode="constant", seed=seed + 2)])
    n_orient = len(levels.ORIENTATIONS)

    def fn(x):
        label = tf.random.uniform((), 0, n_orient, tf.int32)
        x = tf.cast(x, tf.float32)[..., None]
        # ORIENTATIONS order: as_is, flip_lr, flip_ud, rot180
        x = tf.cond(tf.equal(label % 2, 1), lambda: tf.reverse(x, [1]), lambda: x)
        x = tf.cond(label >= 2, lambda: tf.reverse(x, [0]), lambda: x)
        x = geometric(x[None], training=True)[0]
        # smooth multiplicative bias field from a 4x4 grid
        field = tf.random.uniform((1, 4, 4, 1), 1.0 - aug["bias"], 1.0 + aug["bias"])
        x = x * tf.image.resize(field, (canvas, canvas), "bicubic")[0]
        gamma = tf.exp(tf.random.uniform((), -aug["log_gamma"], aug["log_gamma"]))
        x = tf.clip_by_value(x, 0.0, 1.0) ** gamma
        # blur (simulated lower resolution): down- and up-sample by a random factor
        f = tf.random.uniform((), 1.0, aug["max_blur_factor"])
        small = tf.cast(tf.round(canvas / f), tf.int32)
        x = tf.image.resize(tf.image.resize(x, (small, small), "area"), (canvas, canvas),
                            "bilinear")
        x = x + tf.random.normal(tf.shape(x), 0.0, tf.random.uniform((), 0.0, aug["noise"]))
        return tf.clip_by_value(x, 0.0, 1.0), label
    return fn


def _dataset(x: np.ndarray, aug: Mapping[str, Any], canvas: int, batch: int, seed: int):
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_augment_fn(aug, canvas, seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# === Train / score ===
def train_model(x: np.ndarray, config, *, seed: int, log_dir: pathlib.Path | None = None):
    """A trained orientation network on canvases ``x`` (float [N, canvas, canvas])."""
    import keras
    keras.utils.set_random_seed(int(seed))
    canvas = int(config.model.canvas)
    model = orientation_net.build_orientation_net(canvas, tuple(config.model.filters),
                                                  float(config.model.dropout))
    steps_per_epoch = max(1, len(x) // int(config.train.batch_size))
    total = steps_per_epoch * int(config.train.epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - int(config.train.warmup_steps)),
            warmup_target=config.train.learning_rate,
            warmup_steps=int(config.train.warmup_steps))
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=config.train.weight_decay),
                  "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    callbacks = [keras.callbacks.TensorBoard(str(log_dir))] if log_dir else []
    ds = _dataset(x.astype(np.float32), config.augment, canvas, int(config.train.batch_size),
                  seed)
    model.fit(ds, epochs=int(config.train.epochs), callbacks=callbacks,
              verbose=2 if config.train.verbose else 0)
    return model


def score(probs: np.ndarray, threshold: float) -> dict[str, int]:
    """Outcome counts for ``probs`` float [N, 4, 4]: slice n given in flip g (axis 1) gets
    probabilities over the flip to undo (axis 2). Right: the top class is g with p >=
    ``threshold``; refused: top p < ``threshold``; wrong: another class with p >= ``threshold``.
    """
    top = probs.argmax(-1)
    conf = probs.max(-1)
    given = np.broadcast_to(np.arange(probs.shape[1]), top.shape)
    sure = conf >= threshold
    return {"right": int(np.sum(sure & (top == given))), "refused": int(np.sum(~sure)),
            "wrong": int(np.sum(sure & (top != given)))}


def predict_all_flips(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """float [N, 4, 4]: the network's probabilities for every slice in every flip."""
    stacks = [np.stack([np.ascontiguousarray(levels.orient(xi, t)) for t in levels.ORIENTATIONS])
              for xi in x.astype(np.float32)]
    flat = np.concatenate(stacks)[..., None]
    out = model.predict(flat, batch_size=batch, verbose=0)
    return np.asarray(out, np.float64).reshape(len(x), len(levels.ORIENTATIONS), -1)


def fold_metrics(probs: np.ndarray, middle: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy of the top class and outcome counts at ``threshold``, on all held-out slices
    and on the middle ones."""
    out: dict[str, Any] = {}
    for name, sel in (("all", np.ones(len(probs), bool)), ("middle", middle)):
        p = probs[sel]
        given = np.broadcast_to(np.arange(p.shape[1]), p.shape[:2])
        out[name] = {"slices": int(sel.sum()), "cases": int(sel.sum() * p.shape[1]),
                     "top1_accuracy": float(np.mean(p.argmax(-1) == given)) if len(p) else None,
                     **score(p, threshold)}
    return out


def run(config, workdir: str | pathlib.Path, fold: str = "all") -> dict[str, Any]:
    """Cross-validates (``fold`` = ``"all"`` or one fold number) or trains the final model
    (``"final"``); resumable per fold. Returns the summary dict."""
    from spoils_tf.train.common import enable_determinism
    from spoils_tf.data import folds as folds_lib
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fileio.write_json(workdir / "config.json", config.to_dict())
    enable_determinism()
    data = prepare_slices(config.data.labelme_dir, config.data.tfds_dir, workdir / "slices.npz",
                          pixel_mm=float(config.model.pixel_mm), canvas=int(config.model.canvas))
    folds = folds_lib.load_folds(pathlib.Path(config.data.labelme_dir) / "folds.json")
    if fold == "final":
        out = workdir / "final"
        t0 = time.perf_counter()
        model = train_model(data["x"], config, seed=int(config.seed), log_dir=out / "logs")
        fileio.atomic_save_keras(model, out / "model.keras")
        info = {"train_patients": len(set(data["patient"])), "train_slices": len(data["x"]),
                "train_seconds": time.perf_counter() - t0}
        fileio.write_json(out / "train.json", info)
        return {"final": info}
    todo = range(folds.k) if fold == "all" else [int(fold)]
    middle = middle_mask(data, int(config.eval.middle_slices))
    for k in todo:
        fold_dir = workdir / f"fold_{k}"
        if (fold_dir / "metrics.json").is_file():
            continue
        train_p, test_p = folds.split(k)
        train_sel = np.isin(data["patient"], train_p)
        test_sel = np.isin(data["patient"], test_p)
        t0 = time.perf_counter()
        model = train_model(data["x"][train_sel], config, seed=int(config.seed) + k,
                            log_dir=fold_dir / "logs")
        seconds = time.perf_counter() - t0
        fileio.atomic_save_keras(model, fold_dir / "model.keras")
        probs = predict_all_flips(model, data["x"][test_sel])
        metrics = fold_metrics(probs, middle[test_sel], float(config.eval.threshold))
        metrics.update(fold=k, train_seconds=seconds, test_patients=sorted(test_p))
        np.save(fold_dir / "probs.npy", probs)
        fileio.write_json(fold_dir / "metrics.json", metrics)
        print(f"fold {k}: " + "; ".join(f"{n} top-1 {m['top1_accuracy']:.3f} right {m['right']} "
                                         f"refused {m['refused']} wrong {m['wrong']}"
                                         for n, m in ((n, metrics[n]) for n in ("all", "middle")))
              + f" ({seconds:.0f} s)", flush=True)
    return summarise(workdir, folds.k, float(config.eval.threshold))


def summarise(workdir: pathlib.Path, k: int, threshold: float) -> dict[str, Any]:
    """Pools the finished folds: outcome counts, top-1 accuracy mean +- SD over folds; writes
    ``cv_summary.json`` and ``cv_table.md``."""
    per = [json.loads((workdir / f"fold_{i}" / "metrics.json").read_text())
           for i in range(k) if (workdir / f"fold_{i}" / "metrics.json").is_file()]
    summary: dict[str, Any] = {"folds_done": [m["fold"] for m in per], "threshold": threshold}
    lines = [f"Orientation network, patient-grouped CV ({len(per)} of {k} folds), every held-out "
             f"slice given in each of the 4 flips; confident at p >= {threshold:g}.", "",
             "| slices | cases | top-1 acc (mean ± SD over folds) | right | refused | wrong |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ("middle", "all"):
        acc = [m[name]["top1_accuracy"] for m in per if m[name]["top1_accuracy"] is not None]
        counts = {o: sum(m[name][o] for m in per) for o in OUTCOMES}
        cases = sum(m[name]["cases"] for m in per)
        summary[name] = {"cases": cases, "top1_mean": float(np.mean(acc)) if acc else None,
                         "top1_sd": float(np.std(acc)) if acc else None, **counts}
        if acc:
            lines.append(f"| {name} | {cases} | {np.mean(acc):.3f} ± {np.std(acc):.3f} | "
                         f"{counts['right']} | {counts['refused']} | {counts['wrong']} |")
    fileio.write_json(workdir / "cv_summary.json", summary)
    fileio.atomic_write_text(workdir / "cv_table.md", "\n".join(lines) + "\n")
    return summary

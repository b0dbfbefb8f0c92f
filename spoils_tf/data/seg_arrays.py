"""NumPy input path for segmentation, beside the tf.data one: no TensorFlow, any Keras backend.

The same examples as ``seg_pipeline.make_seg_dataset`` (whole slices letterboxed or resized
to the model size, normalised as ``seg_pipeline.normalize_images``), held as arrays and fed to
``model.fit`` through a ``keras.utils.PyDataset``, so the JAX (or torch) backend trains on a
machine without TensorFlow. ``tests/test_seg_arrays.py`` pins every function here against its
TensorFlow counterpart.

Arrays (:class:`SegArrays`)::

    images        uint8 [N, S_h, S_w]   greyscale at the model size (prepare_image)
    masks         uint8 [N, S_h, S_w]   class ids at the model size (NEAREST)
    patients      str   [N]             patient ids
    keys          str   [N]             example keys "<patient>_slice<k>"
    slices        int32 [N]             slice index in the patient's volume
    original_masks list of uint8 [h_i, w_i]  the masks at the original resolution (scoring)

Resampling follows TensorFlow's ``tf.image.resize`` (``antialias=False``): bilinear with
half-pixel centres (source ``(i + 0.5) * in / out - 0.5``, clamped to the edge pixels),
NEAREST as ``floor((i + 0.5) * in / out)``; letterbox geometry as
``seg_pipeline.letterbox_geometry`` (round half to even). Images are rounded to uint8 after
resampling exactly as ``seg_pipeline.prepare_images``.

Pack file (:func:`save_npz` / :func:`load_npz`): one ``np.savez_compressed`` archive (zip of
deflated arrays, lossless) with the images as PNG bytes (``image_png`` + ``image_png_offsets``;
PNG's row filters compress MRI ~30 % better than deflate alone), masks and original masks as
raw uint8 (deflated), and the metadata arrays above; no pickled objects.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import pathlib
from typing import Callable, Mapping, Optional, Sequence

import keras
import numpy as np
import PIL.Image

from spoils_tf import fileio, labels
from spoils_tf.data import layout
from spoils_tf.data.seg_constants import IMAGENET_CAFFE_MEAN_BGR, RESIZE_MODES

log = logging.getLogger(__name__)

PACK_VERSION = 1


# === Resampling (tf.image.resize semantics) ===
def letterbox_geometry(in_h: int, in_w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of an ``in_h x in_w`` image letterboxed into
    ``out_h x out_w`` (scale ``min(out_h / in_h, out_w / in_w)``, centred), as
    ``seg_pipeline.letterbox_geometry``."""
    scale = min(out_h / float(in_h), out_w / float(in_w))
    new_h = int(np.clip(np.rint(in_h * scale), 1, out_h))
    new_w = int(np.clip(np.rint(in_w * scale), 1, out_w))
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower index, upper index, weight of upper)`` per output position, half-pixel, in
    float32 as TensorFlow's kernel computes them."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    lo_f = np.floor(src)
    frac = (src - lo_f).astype(np.float32)
    lo = np.clip(lo_f, 0, in_size - 1).astype(np.int64)
    hi = np.clip(np.ceil(src), 0, in_size - 1).astype(np.int64)
    return lo, hi, frac


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of ``[H, W]`` or ``[H, W, C]`` to ``float32 [out_h, out_w(, C)]``
    (``tf.image.resize(..., "bilinear")`` without antialiasing: columns first, then rows,
    each as ``a + (b - a) * w`` in float32)."""
    x = np.asarray(x, np.float32)
    r_lo, r_hi, r_w = _linear_taps(x.shape[0], out_h)
    c_lo, c_hi, c_w = _linear_taps(x.shape[1], out_w)
    extra = (1,) * (x.ndim - 2)
    c_w = c_w.reshape((1, -1) + extra)
    left, right = x[:, c_lo], x[:, c_hi]
    cols = left + (right - left) * c_w
    r_w = r_w.reshape((-1, 1) + extra)
    top, bottom = cols[r_lo], cols[r_hi]
    return top + (bottom - top) * r_w


def resize_nearest(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """NEAREST resize of ``[H, W(, C)]`` keeping the dtype (``tf.image.resize(...,
    "nearest")``: source ``floor((i + 0.5) * in / out)``)."""
    x = np.asarray(x)
    rows = np.minimum(((np.arange(out_h) + 0.5) * (x.shape[0] / out_h)).astype(np.int64),
                      x.shape[0] - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * (x.shape[1] / out_w)).astype(np.int64),
                      x.shape[1] - 1)
    return x[rows][:, cols]


def fit_to_model(image: np.ndarray, size: Sequence[int], mode: str = "letterbox", *,
                 is_mask: bool = False) -> np.ndarray:
    """``[H, W(, C)]`` -> ``[S_h, S_w(, C)]`` as ``seg_pipeline.fit_to_model``: letterbox
    (aspect kept, zero padding) or resize (stretch); images bilinear to float32, masks
    NEAREST in their dtype.

    Raises:
      ValueError: unknown mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    out_h, out_w = int(size[0]), int(size[1])
    resize = resize_nearest if is_mask else resize_bilinear
    if mode == "resize":
        return resize(image, out_h, out_w)
    new_h, new_w, top, left = letterbox_geometry(image.shape[0], image.shape[1], out_h, out_w)
    inner = resize(image, new_h, new_w)
    out = np.zeros((out_h, out_w) + inner.shape[2:], inner.dtype)
    out[top:top + new_h, left:left + new_w] = inner
    return out


def prepare_image(image: np.ndarray, size: Sequence[int], mode: str = "letterbox") -> np.ndarray:
    """``uint8 [H, W]`` -> ``uint8 [S_h, S_w]``: :func:`fit_to_model`, rounded half to even
    and clipped (``seg_pipeline.prepare_images``)."""
    return np.clip(np.rint(fit_to_model(image, size, mode)), 0, 255).astype(np.uint8)


def restore_resolution(probs: np.ndarray, in_h: int, in_w: int,
                       mode: str = "letterbox") -> np.ndarray:
    """``float32 [S_h, S_w, C]`` model output -> ``float32 [in_h, in_w, C]``: letterbox padding
    cropped, then bilinear (``seg_pipeline.restore_resolution`` for one slice).

    Raises:
      ValueError: unknown mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "letterbox":
        new_h, new_w, top, left = letterbox_geometry(in_h, in_w, probs.shape[0], probs.shape[1])
        probs = probs[top:top + new_h, left:left + new_w]
    return resize_bilinear(probs, int(in_h), int(in_w))


def normalize_images(images: np.ndarray) -> np.ndarray:
    """``uint8 [..., H, W]`` or ``[..., H, W, 1|3]`` in 0..255 -> ``float32 [..., H, W, 3]``:
    grey repeated to 3 channels, reversed to BGR, minus ``IMAGENET_CAFFE_MEAN_BGR``
    (``seg_pipeline.normalize_images``)."""
    x = np.asarray(images, np.float32)
    if x.ndim == 2 or x.shape[-1] not in (1, 3):
        x = x[..., None]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x[..., ::-1] - np.asarray(IMAGENET_CAFFE_MEAN_BGR, np.float32)


# === Arrays ===
@dataclasses.dataclass(frozen=True)
class SegArrays:
    """Whole slices at the model size with their keys (module docstring: shapes, dtypes)."""

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray
    keys: np.ndarray
    slices: np.ndarray
    original_masks: tuple[np.ndarray, ...]
    resize_mode: str = "letterbox"

    def __post_init__(self):
        n = len(self.images)
        if self.images.shape != self.masks.shape or self.images.dtype != np.uint8:
            raise ValueError(f"images {self.images.shape} {self.images.dtype} and masks "
                             f"{self.masks.shape}: expected uint8 [N, S_h, S_w] of one shape")
        for name in ("patients", "keys", "slices", "original_masks"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} entries for {n} images")
        if n and int(self.masks.max()) >= labels.NUM_SEG_CLASSES:
            bad = self.keys[int(np.argmax(self.masks.reshape(n, -1).max(axis=1)))]
            raise ValueError(f"mask of example {bad} has class ids >= {labels.NUM_SEG_CLASSES}")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def indices(self, patients: Optional[Sequence[str]] = None,
                keys: Optional[Sequence[str]] = None) -> np.ndarray:
        """Positions of the examples of ``patients`` (and ``keys``); None = all.

        Raises:
          ValueError: an empty ``patients``/``keys`` list, or a selection with no example.
        """
        keep = np.ones(len(self.images), bool)
        for name, wanted, column in (("patients", patients, self.patients),
                                     ("keys", keys, self.keys)):
            if wanted is None:
                continue
            if not len(wanted):
                raise ValueError(f"{name}: empty list; expected at least one")
            keep &= np.isin(column, [str(w) for w in wanted])
        idx = np.flatnonzero(keep)
        if not len(idx):
            raise ValueError(f"no example of patients {list(patients or [])[:5]}... in the arrays")
        return idx


def middle_keys(keys_by_patient: Mapping[str, Sequence[tuple[int, str]]], n: int) -> set[str]:
    """The ``n`` slices nearest each patient's middle slice index (ties: lower index)."""
    out = set()
    for items in keys_by_patient.values():
        idx = sorted(i for i, _ in items)
        middle = (idx[0] + idx[-1]) / 2.0
        out.update(k for _, k in sorted(items, key=lambda t: (abs(t[0] - middle), t[0]))[:n])
    return out


def from_dataset_dir(dataset_dir: str | pathlib.Path, image_size: Sequence[int],
                     resize_mode: str = "letterbox", max_slices_per_patient: int = 0,
                     progress: Optional[Callable[[int, int], None]] = None) -> SegArrays:
    """Reads a spoils dataset dir (``labelme/<patient>/*.json``, SPIDER or synthetic) into
    :class:`SegArrays`, in the sorted file order of ``layout.list_labelme_jsons`` (the TFDS
    builder's order).

    Args:
      max_slices_per_patient: 0 = every slice; n = the n slices nearest each patient's middle
        slice index (:func:`middle_keys`, as ``seg_lib.central_slice_keys``).
      progress: called ``(done, total)`` after each file.

    Files that ``labelme_io.read_labelme`` refuses are skipped and named in one warning; the
    order of the rest is kept.

    Raises:
      FileNotFoundError: no ``labelme/`` directory.
      ValueError: no readable example.
    """
    from spoils_tf.data import labelme_io   # cv2 + labelme: only readers of LabelMe files pay
    paths = layout.list_labelme_jsons(dataset_dir)
    if max_slices_per_patient:
        by_patient: dict[str, list[tuple[int, str]]] = {}
        for p in paths:
            try:
                patient, index = layout.parse_stem(p.stem)
            except ValueError:
                continue      # read below, where the reader names the problem
            by_patient.setdefault(patient, []).append((index, p.stem))
        keep = middle_keys(by_patient, int(max_slices_per_patient))
        paths = [p for p in paths if p.stem in keep or p.stem not in
                 {k for items in by_patient.values() for _, k in items}]
    images, masks, patients, keys, slices, originals, bad = [], [], [], [], [], [], []
    size = (int(image_size[0]), int(image_size[1]))
    for i, path in enumerate(paths):
        try:
            rec = labelme_io.read_labelme(path, root=dataset_dir)
        except (ValueError, OSError) as e:
            bad.append(f"{path}: {e}")
        else:
            mask = rec.mask.astype(np.uint8)
            images.append(prepare_image(rec.image, size, resize_mode))
            masks.append(fit_to_model(mask, size, resize_mode, is_mask=True))
            patients.append(rec.patient)
            keys.append(layout.slice_stem(rec.patient, rec.slice))
            slices.append(rec.slice)
            originals.append(mask)
        if progress is not None:
            progress(i + 1, len(paths))
    if bad:
        log.warning("%d file(s) skipped:\n  %s", len(bad), "\n  ".join(bad))
    if not images:
        raise ValueError(f"{dataset_dir}: no readable LabelMe example")
    return SegArrays(np.stack(images), np.stack(masks), np.asarray(patients),
                     np.asarray(keys), np.asarray(slices, np.int32), tuple(originals),
                     resize_mode)


# === Pack file ===
def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_npz(arrays: SegArrays, path: str | pathlib.Path) -> int:
    """Writes ``arrays`` as one compressed, pickle-free ``.npz`` (module docstring), atomically;
    returns its size in bytes."""
    pngs = [np.frombuffer(_png_bytes(im), np.uint8) for im in arrays.images]
    offsets = np.cumsum([0] + [len(p) for p in pngs]).astype(np.int64)
    orig_shapes = np.asarray([m.shape for m in arrays.original_masks], np.int32)
    payload = {
            "version": np.asarray(PACK_VERSION),
            "image_png": np.concatenate(pngs) if pngs else np.zeros(0, np.uint8),
            "image_png_offsets": offsets,
            "masks": arrays.masks,
            "patients": np.asarray(arrays.patients, str),
            "keys": np.asarray(arrays.keys, str),
            "slices": np.asarray(arrays.slices, np.int32),
            "original_mask_shapes": orig_shapes,
            "original_masks_flat": np.concatenate([m.ravel() for m in arrays.original_masks]),
            "resize_mode": np.asarray(arrays.resize_mode),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:     # a file object: savez would append ".npz" to a name
            np.savez_compressed(f, **payload)

    return fileio.atomic_write(path, write).stat().st_size


def load_npz(path: str | pathlib.Path) -> SegArrays:
    """Reads a file written by :func:`save_npz`.

    Raises:
      ValueError: not such a file (missing array, other version); names the file.
    """
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != PACK_VERSION:
                raise ValueError(f"pack version {int(z['version'])}, expected {PACK_VERSION}")
            data = {k: z[k] for k in z.files}
    except (KeyError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a spoils segmentation pack ({e})") from e
    offsets = data["image_png_offsets"]
    blob = data["image_png"]
    images = np.stack([np.asarray(PIL.Image.open(io.BytesIO(blob[a:b].tobytes())))
                       for a, b in zip(offsets[:-1], offsets[1:])])
    originals, start = [], 0
    for h, w in data["original_mask_shapes"]:
        originals.append(data["original_masks_flat"][start:start + h * w].reshape(h, w))
        start += h * w
    return SegArrays(images, data["masks"], data["patients"], data["keys"], data["slices"],
                     tuple(originals), str(data["resize_mode"]))


# === Keras input ===
class SegBatches(keras.utils.PyDataset):
    """``keras.utils.PyDataset`` of ``(image float32 [B, S_h, S_w, 3], mask int32 [B, S_h,
    S_w])`` over ``arrays[indices]``: the batches of ``seg_pipeline.make_seg_dataset``.

    Args:
      arrays: the examples.
      indices: positions in ``arrays`` (``SegArrays.indices``).
      batch_size: examples per batch (the last batch may be smaller).
      shuffle: a new permutation each epoch from ``seed`` and the epoch number.
      augment: ``(uint8 [B, S, S], uint8 [B, S, S], rng) -> (float [B, S, S] 0..255, masks)``
        applied to training batches, or None.
      complete_last: fill a short last batch with the first examples of the epoch's order
        (every batch has ``batch_size`` examples: one compiled train step under XLA).
      **kwargs: ``keras.utils.PyDataset`` options (``workers``, ``use_multiprocessing``,
        ``max_queue_size``).

    Raises:
      ValueError: no indices or ``batch_size`` < 1.
    """

    def __init__(self, arrays: SegArrays, indices: Sequence[int], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0,
                 augment: Optional[Callable] = None, complete_last: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not len(indices) or batch_size < 1:
            raise ValueError(f"SegBatches: {len(indices)} indices, batch_size {batch_size}; "
                             "expected at least one of each")
        self.arrays = arrays
        self.indices = np.asarray(indices, np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.augment = augment
        self.complete_last = complete_last
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.indices)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        idx = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        if self.complete_last and len(idx) < self.batch_size:
            idx = np.concatenate([idx, np.resize(self._order, self.batch_size - len(idx))])
        images, masks = self.arrays.images[idx], self.arrays.masks[idx]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            images, masks = self.augment(images, masks, rng)
        return normalize_images(images), np.asarray(masks, np.int32)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()

"""Test helper: one classic MR DICOM slice written with pydicom (explicit VR little endian).

Shared by test_dicom_io.py (marker series) and test_predict.py (synthetic spine series); both
put patient identifiers (``phi``) into the header so the tests can check they never leak.
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional, Sequence

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def write_mr_slice(path: pathlib.Path, pixels: np.ndarray, k: int, *, iop: Sequence[float],
                   phi: dict[str, str], spacing_between: float = 3.0,
                   pixel_spacing: Optional[Sequence[float]] = (0.5, 0.7),
                   slice_thickness: float = 3.0, series_uid: str = "1.2.826.0.1.3680043.8.498.1",
                   series_number: int = 2, position: bool = True,
                   extra: Optional[dict[str, Any]] = None) -> pathlib.Path:
    """Writes slice ``k`` of a series to ``path`` and returns the path.

    Args:
        pixels: uint16 [rows, cols] stored values.
        k: slice index: InstanceNumber k + 1 and, with ``position``, ImagePositionPatient at
            k x ``spacing_between`` mm along the normal of ``iop``.
        iop: ImageOrientationPatient (6 direction cosines); phi: header fields, e.g.
            PatientName; pixel_spacing: (row, col) mm or None to leave the tag out;
        extra: any other header fields (set last, so they can override).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in phi.items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.Manufacturer = "TestVendor"
    ds.MagneticFieldStrength = 1.5
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = k + 1
    ds.ImageOrientationPatient = [float(v) for v in iop]
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    if position:
        ds.ImagePositionPatient = [float(v) for v in normal * k * spacing_between]
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = slice_thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path

"""One study on a DICOMweb PACS -> a report folder here and a SEG + SR stored back:
:func:`run_pacs`, the library behind ``spoils pacs`` (dicomweb-client).

Steps, each a function:

1. :func:`list_series` (QIDO-RS on the study, plus WADO-RS metadata of one instance of each MR
   series): every series' number, description, modality, instance count, plane
   (``dicom_io.classify_plane`` of its ``ImageOrientationPatient``) and weighting
   (:func:`weighting`).
2. :func:`choose_series`: the series given with ``--series`` (checked to be in the study and
   MR), else the one sagittal MR series, else the one sagittal T2 series among several sagittal
   ones; anything else is refused with the list of series (number, description, modality,
   plane, weighting; never a patient field) so that the user can give ``--series``.
3. WADO-RS retrieve of that series into a private temporary folder (removed afterwards).
4. ``spoils_tf.serve.run.run_predict`` on it -> ``<out>/report/`` (the usual report folder).
5. ``spoils_tf.serve.dicom_results``: SEG and SR of the report's mask and measurements ->
   ``<out>/seg.dcm``, ``<out>/sr.dcm``.
6. STOW-RS of both into the study; the PACS' answer is checked (no failed SOP instance), then
   ``<out>/pacs.json`` records the series used and the stored SOP instance UIDs.

Outputs: all or nothing (``fileio.atomic_output_dir``): the whole ``--out`` folder appears only
after the store succeeded; a refusal or a failed store leaves nothing (a store that failed
after the PACS accepted the SEG but not the SR is reported as such). A report with status
``no_disc`` is written without storing anything (nothing to store).

Privacy: the retrieved files hold the patient module; they stay in a temporary folder that is
removed, and nothing read from them but technical fields (series number and description,
modality, orientation, echo time) is printed or written here (the SEG and SR carry the patient
module to the PACS, as DICOM requires).

Limits: one slice (the mid-sagittal one) is segmented, as ``spoils predict`` does by default;
no authentication (``--url`` is used as given); multi-frame (enhanced) MR is refused by the
reader.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
from typing import Any, Optional, Sequence

from spoils_tf import fileio
from spoils_tf.errors import SpoilsError
from spoils_tf.serve import dicom_results, report_data, run

PACS_FILES: dict[str, str] = {"report": "report", "seg": dicom_results.SEG_FILE,
                              "sr": dicom_results.SR_FILE, "summary": "pacs.json"}
HTTP_TIMEOUT_S = 60.0
# a failed request is tried this many times in all, waiting 0.25 s, 0.5 s, ... in between
# (dicomweb-client's default, 5 tries from 1 s, makes an unreachable PACS take half a minute)
HTTP_ATTEMPTS = 3
HTTP_RETRY_WAIT_MS = 250

_TAG = {"SeriesInstanceUID": "0020000E", "SeriesNumber": "00200011",
        "SeriesDescription": "0008103E", "Modality": "00080060",
        "NumberOfSeriesRelatedInstances": "00201209", "SOPInstanceUID": "00080018",
        "ImageOrientationPatient": "00200037", "EchoTime": "00180081",
        "RepetitionTime": "00180080", "InversionTime": "00180082",
        "ProtocolName": "00181030", "SequenceName": "00180024"}


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """What the PACS says about one series (technical fields only).

    Attributes:
        uid: SeriesInstanceUID.
        number: SeriesNumber or None.
        description: SeriesDescription ("" when absent).
        modality: Modality.
        n_instances: NumberOfSeriesRelatedInstances or None.
        plane: ``"sagittal" | "coronal" | "axial" | "oblique ..."``, or None (not an MR image
            series, or no ImageOrientationPatient).
        weighting: ``"T1" | "T2" | None`` (:func:`weighting`).
    """
    uid: str
    number: Optional[int]
    description: str
    modality: str
    n_instances: Optional[int]
    plane: Optional[str] = None
    weighting: Optional[str] = None

    def describe(self) -> str:
        """One line without any UID or patient field, e.g. ``#3 'T2 SAG' (MR, 15 instances,
        sagittal, T2)``."""
        facts = [self.modality or "?"]
        if self.n_instances is not None:
            facts.append(f"{self.n_instances} instances")
        facts += [self.plane or "plane unknown", self.weighting or "weighting unknown"]
        number = self.number if self.number is not None else "?"
        return f"#{number} '{self.description}' ({', '.join(facts)})"


def _value(item: dict, keyword: str) -> Any:
    values = (item.get(_TAG[keyword]) or {}).get("Value") or [None]
    return values[0] if len(values) == 1 else values


def weighting(description: str, echo_time_ms: Optional[float] = None,
              repetition_time_ms: Optional[float] = None,
              inversion_time_ms: Optional[float] = None) -> Optional[str]:
    """The series' MR weighting by the rule ``spoils predict`` applies to files
    (``spoils_tf.data.mr_weighting.from_header``: the timings when they decide, else the
    description / protocol / sequence name tokens), or None when neither decides."""
    from spoils_tf.data import mr_weighting
    found, _ = mr_weighting.from_header(description=description, echo_time_ms=echo_time_ms,
                                        repetition_time_ms=repetition_time_ms,
                                        inversion_time_ms=inversion_time_ms)
    return None if found == "unknown" else found


def _http(step: str, url: str):
    """Turns a requests failure of ``step`` into a SpoilsError naming the URL and the step."""
    import contextlib

    import requests

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise SpoilsError(url, step, f"the PACS answered HTTP {status}") from e
        except requests.exceptions.RequestException as e:
            raise SpoilsError(url, step, f"no answer from the PACS ({type(e).__name__})") from e
    return guard()


def connect(url: str):
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` (the DICOMweb root, e.g.
    ``http://127.0.0.1:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient
    client = DICOMwebClient(url=url.rstrip("/"), timeout=HTTP_TIMEOUT_S)
    client.set_http_retry_params(max_attempts=HTTP_ATTEMPTS,
                                 wait_exponential_multiplier=HTTP_RETRY_WAIT_MS)
    return client


def list_series(client, study_uid: str) -> list[SeriesInfo]:
    """Every series of the study, with plane and weighting for MR series (module docstring).

    Raises:
        SpoilsError: the study is unknown to the PACS (no series) or the PACS fails.
    """
    from spoils_tf.data import dicom_io
    with _http("QIDO-RS series of --study", client.base_url):
        found = client.search_for_series(study_instance_uid=study_uid)
    if not found:
        raise SpoilsError(client.base_url, "--study", "the PACS holds no series for this study")
    out = []
    for item in found:
        info = SeriesInfo(uid=str(_value(item, "SeriesInstanceUID")),
                          number=_int_or_none(_value(item, "SeriesNumber")),
                          description=str(_value(item, "SeriesDescription") or ""),
                          modality=str(_value(item, "Modality") or ""),
                          n_instances=_int_or_none(_value(item, "NumberOfSeriesRelatedInstances")))
        if info.modality == "MR":
            meta = _first_instance_metadata(client, study_uid, info.uid)
            iop = (meta.get(_TAG["ImageOrientationPatient"]) or {}).get("Value")
            plane = None
            if iop and len(iop) == 6:
                import numpy as np
                try:
                    plane = dicom_io.classify_plane(np.cross(np.asarray(iop[:3], float),
                                                             np.asarray(iop[3:], float)))[0]
                except ValueError:
                    plane = None
            names = " ".join(str(_value(meta, k) or "") for k in ("ProtocolName",
                                                                  "SequenceName"))
            times = [_value(meta, k) for k in ("EchoTime", "RepetitionTime", "InversionTime")]
            info = dataclasses.replace(info, plane=plane, weighting=weighting(
                    f"{info.description} {names}", *[None if t is None else float(t)
                                                     for t in times]))
        out.append(info)
    return sorted(out, key=lambda s: (s.number is None, s.number or 0, s.description))


def _int_or_none(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _first_instance_metadata(client, study_uid: str, series_uid: str) -> dict:
    with _http("QIDO-RS / WADO-RS metadata of a series", client.base_url):
        inst = client.search_for_instances(study_instance_uid=study_uid,
                                           series_instance_uid=series_uid, limit=1)
        if not inst:
            return {}
        return client.retrieve_instance_metadata(
                study_instance_uid=study_uid, series_instance_uid=series_uid,
                sop_instance_uid=str(_value(inst[0], "SOPInstanceUID")))


def choose_series(series: Sequence[SeriesInfo], series_uid: Optional[str] = None) -> SeriesInfo:
    """The series to report on (module docstring, step 2).

    Raises:
        SpoilsError: ``series_uid`` not in the study or not MR; no sagittal MR series; several
            sagittal series none or several of which read as T2. The message lists the
            study's series by number, description, modality, plane and weighting.
    """
    listing = "; ".join(s.describe() for s in series)
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            raise SpoilsError(None, "--series", f"not a series of this study; the study holds: "
                                                f"{listing}")
        if match[0].modality != "MR":
            raise SpoilsError(None, "--series", f"series {match[0].describe()} is not MR; "
                                                "expected a sagittal T2 MR series")
        return match[0]
    sagittal = [s for s in series if s.modality == "MR" and s.plane == "sagittal"]
    if len(sagittal) == 1:
        return sagittal[0]
    t2 = [s for s in sagittal if s.weighting == "T2"]
    if len(t2) == 1:
        return t2[0]
    why = ("no sagittal MR series" if not sagittal else
           f"{len(sagittal)} sagittal MR series, {len(t2)} of them T2")
    raise SpoilsError(None, "--series", f"cannot choose the sagittal T2 series: {why}. The study "
                                        f"holds: {listing}. Give --series SERIES_INSTANCE_UID")


def is_pacs_dir(path: pathlib.Path) -> bool:
    """True when the folder holds a previous ``spoils pacs`` output (``pacs.json`` and nothing
    but :data:`PACS_FILES`)."""
    names = {p.name for p in pathlib.Path(path).iterdir()}
    return PACS_FILES["summary"] in names and names <= set(PACS_FILES.values())


def _check_stored(response, url: str, stored_so_far: list[str]) -> None:
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise SpoilsError(url, "STOW-RS", f"the PACS refused {len(failed)} instance(s) (failure "
                                          f"reason {', '.join(reasons)})"
                                          + (f"; already stored: {', '.join(stored_so_far)}"
                                             if stored_so_far else ""))


def run_pacs(url: str, study_uid: str, out_dir, *, series_uid: Optional[str] = None,
             odi=None, nrs=None, models_dir=None, precision: str = "float32",
             client=None) -> dict[str, Any]:
    """Finds, fetches and reports on the study's sagittal T2 series and stores SEG + SR back.

    Args:
        url: the DICOMweb root (``.../dicom-web``).
        study_uid: StudyInstanceUID of the study.
        out_dir: folder to create (or a previous output, replaced): ``report/``, ``seg.dcm``,
            ``sr.dcm``, ``pacs.json``.
        series_uid: the series to use (else :func:`choose_series` picks).
        odi, nrs: scores for the recommendation (both or neither).
        client: a ``DICOMwebClient`` (tests); else one for ``url``.

    Returns:
        the ``pacs.json`` dict: ``status``, ``series`` (number, description, plane,
        weighting), ``report_dir``, ``stored`` (``seg``/``sr`` SOP instance UIDs, empty when
        nothing was stored), ``segments``.

    Raises:
        SpoilsError: ``--out`` refused (before any request), the PACS unreachable or failing
            (names the step), no series to choose, bad input (``run_predict``'s refusals),
            the store refused; nothing is written then.
    """
    import pydicom
    fileio.check_output_dir(out_dir, replace_if=is_pacs_dir)
    client = client or connect(url)
    chosen = choose_series(list_series(client, study_uid), series_uid)
    with tempfile.TemporaryDirectory(prefix="spoils-pacs-") as tmp:
        series_dir = pathlib.Path(tmp) / "series"
        series_dir.mkdir()
        with _http("WADO-RS retrieve of the series", client.base_url):
            datasets = client.retrieve_series(study_instance_uid=study_uid,
                                              series_instance_uid=chosen.uid)
        if not datasets:
            raise SpoilsError(client.base_url, "WADO-RS", f"series {chosen.describe()} came "
                                                          "back empty")
        for i, ds in enumerate(datasets):
            ds.save_as(str(series_dir / f"{i:05d}.dcm"), enforce_file_format=True)
        with fileio.atomic_output_dir(out_dir, replace_if=is_pacs_dir) as out:
            report = run.run_predict(series_dir, models_dir, out / PACS_FILES["report"],
                                     odi=odi, nrs=nrs, precision=precision)
            summary: dict[str, Any] = {
                "status": report["status"],
                "series": {"number": chosen.number, "description": chosen.description,
                           "plane": chosen.plane, "weighting": chosen.weighting},
                "report_dir": PACS_FILES["report"], "stored": {}, "segments": {}}
            if report["status"] != report_data.STATUS_NO_DISC:
                rep, masks = dicom_results.read_report_dir(out / PACS_FILES["report"])
                sources = [pydicom.dcmread(str(p)) for p in sorted(series_dir.iterdir())]
                results = dicom_results.build_dicom_results(rep, masks, sources)
                dicom_results.write_dicom_results(results, out)
                stored: list[str] = []
                for key, ds in (("seg", results.seg), ("sr", results.sr)):
                    with _http(f"STOW-RS of the {key.upper()}", client.base_url):
                        response = client.store_instances([ds], study_instance_uid=study_uid)
                    _check_stored(response, client.base_url, stored)
                    stored.append(key.upper())
                    summary["stored"][key] = str(ds.SOPInstanceUID)
                summary["segments"] = results.segment_numbers
            fileio.atomic_write_text(out / PACS_FILES["summary"],
                                     json.dumps(summary, indent=2) + "\n")
    return summary

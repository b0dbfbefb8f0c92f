"""``spoils pacs`` against a real Orthanc (with its DICOMweb plugin) started by the test.

Orthanc runs from a temporary configuration: HTTP on a free 127.0.0.1 port, its DICOM server
off, no remote access, no authentication, storage in a temporary folder, the DICOMweb plugin.
A synthetic study holding a sagittal T2 series, a sagittal T1 series and an axial T2 series is
uploaded through the REST API (``POST /instances``); ``spoils pacs`` must pick the sagittal T2
series, report on it with the shipped models (one real prediction) and store a SEG and an SR
that QIDO-RS then finds in the study, whose SR reads back with the report's measurements and
whose SEG references the T2 series. A study with two sagittal T2 series is refused with the
series listed and nothing written. Orthanc is stopped (its process group killed) and its
folder removed at the end. Skipped only when the Orthanc binary or the plugin is missing
(``make system-deps``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from test_dicom_results import PHI_STRINGS, write_series

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
AXIAL = [1, 0, 0, 0, 1, 0]
STUDY = "1.2.826.0.1.3680043.8.498.6101"
AMBIGUOUS_STUDY = "1.2.826.0.1.3680043.8.498.6201"
T2_SERIES = "1.2.826.0.1.3680043.8.498.6102"
T1_SERIES = "1.2.826.0.1.3680043.8.498.6103"
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def orthanc():
    """The base URL (``http://127.0.0.1:PORT``) of an Orthanc running for this module."""
    import httpx
    if not os.path.isfile(ORTHANC) or not os.path.isfile(DICOMWEB_PLUGIN):
        pytest.skip(f"Orthanc ({ORTHANC}) or its DICOMweb plugin ({DICOMWEB_PLUGIN}) is not "
                    "installed: make system-deps")
    home = pathlib.Path(tempfile.mkdtemp(prefix="spoils-orthanc-"))
    port = _free_port()
    config = {"Name": "spoils-test", "StorageDirectory": str(home / "db"),
              "IndexDirectory": str(home / "db"), "HttpPort": port,
              "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (home / "orthanc.json").write_text(json.dumps(config))
    log = open(home / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(home / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"Orthanc exited at start (code {proc.returncode}): "
                            f"{(home / 'orthanc.log').read_text(errors='replace')[-500:]}")
            try:
                if "dicom-web" in httpx.get(f"{base}/plugins", timeout=2).json():
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer /plugins within {START_TIMEOUT_S:g} s")
            time.sleep(0.3)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _upload(base: str, files) -> None:
    import httpx
    for f in files:
        r = httpx.post(f"{base}/instances", content=pathlib.Path(f).read_bytes(), timeout=30)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def study(orthanc, case, tmp_path_factory):
    """The study of the module docstring, uploaded; returns the series folder root."""
    root = tmp_path_factory.mktemp("study")
    image = case[0]
    _upload(orthanc, write_series(root / "t2", image, series_uid=T2_SERIES, study_uid=STUDY,
                                  description="SAG T2 TSE", series_number=3))
    _upload(orthanc, write_series(root / "t1", image, series_uid=T1_SERIES, study_uid=STUDY,
                                  description="SAG T1 TSE", series_number=2, echo_time_ms=12.0))
    _upload(orthanc, write_series(root / "ax", image[:, :128], iop=AXIAL, n=2,
                                  series_uid="1.2.826.0.1.3680043.8.498.6104", study_uid=STUDY,
                                  description="AX T2", series_number=4))
    return root


def test_round_trip_stores_seg_and_sr_found_by_qido(orthanc, study, tmp_path, capfd):
    import highdicom as hd
    from dicomweb_client.api import DICOMwebClient

    from spoils_tf.cli import pacs as pacs_cmd
    out = tmp_path / "out"
    code = pacs_cmd.main(["--url", f"{orthanc}/dicom-web", "--study", STUDY, "--out", str(out),
                          "--odi", "30", "--nrs", "4"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "'SAG T2 TSE'" in captured.out
    for s in PHI_STRINGS:
        assert s not in captured.out + captured.err, s
    summary = json.loads((out / "pacs.json").read_text())
    assert summary["series"] == {"number": 3, "description": "SAG T2 TSE",
                                 "plane": "sagittal", "weighting": "T2"}
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["input"]["kind"] == "dicom_series"
    text = b"".join(p.read_bytes() for p in sorted((out / "report").iterdir()))
    for s in PHI_STRINGS:     # the report folder and the summary name no patient
        assert s.encode() not in text + (out / "pacs.json").read_bytes(), s

    client = DICOMwebClient(url=f"{orthanc}/dicom-web")
    series = client.search_for_series(study_instance_uid=STUDY)
    by_modality = {}
    for item in series:
        by_modality.setdefault(item["00080060"]["Value"][0], []).append(
                item["0020000E"]["Value"][0])
    assert sorted(by_modality) == ["MR", "SEG", "SR"]
    assert len(by_modality["MR"]) == 3 and len(by_modality["SEG"]) == 1
    (sr_series,) = by_modality["SR"]
    (sr_item,) = client.search_for_instances(study_instance_uid=STUDY,
                                             series_instance_uid=sr_series)
    assert sr_item["00080018"]["Value"][0] == summary["stored"]["sr"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(client.retrieve_instance(
            study_instance_uid=STUDY, series_instance_uid=sr_series,
            sop_instance_uid=summary["stored"]["sr"]))
    groups = {g.tracking_identifier: g for g in
              sr.content.get_volumetric_roi_measurement_groups()}
    assert sorted(groups) == sorted(f"disc {d['level']}" for d in report["discs"])
    d = next(d for d in report["discs"] if d["measurements"]["disc_height_mm"]["value"])
    heights = [m.value for m in groups[f"disc {d['level']}"].get_measurements()
               if m.name.value == "DISC_H_MEAN"]
    assert heights == [pytest.approx(d["measurements"]["disc_height_mm"]["value"])]
    seg = hd.seg.Segmentation.from_dataset(client.retrieve_instance(
            study_instance_uid=STUDY, series_instance_uid=by_modality["SEG"][0],
            sop_instance_uid=summary["stored"]["seg"]))
    assert {u[1] for u in seg.get_source_image_uids()} == {T2_SERIES}
    assert seg.number_of_segments == len(summary["segments"]) >= 10


def test_several_sagittal_t2_series_are_listed_and_nothing_is_written(orthanc, case, tmp_path,
                                                                      capfd):
    from spoils_tf.cli import pacs as pacs_cmd
    for number in (5, 7):
        _upload(orthanc, write_series(tmp_path / f"s{number}", case[0][:96, :96], n=1,
                                      series_uid=f"1.2.826.0.1.3680043.8.498.62{number:02d}",
                                      study_uid=AMBIGUOUS_STUDY, description=f"T2 SAG {number}",
                                      series_number=number))
    out = tmp_path / "out"
    code = pacs_cmd.main(["--url", f"{orthanc}/dicom-web", "--study", AMBIGUOUS_STUDY,
                          "--out", str(out)])
    err = capfd.readouterr().err
    assert code == 2
    assert "#5 'T2 SAG 5' (MR, 1 instances, sagittal, T2)" in err
    assert "#7 'T2 SAG 7'" in err and "--series" in err
    for s in PHI_STRINGS:
        assert s not in err, s
    assert not out.exists()
    code = pacs_cmd.main(["--url", f"{orthanc}/dicom-web", "--study", AMBIGUOUS_STUDY,
                          "--series", "1.2.3.4", "--out", str(out)])
    assert code == 2 and "not a series of this study" in capfd.readouterr().err
    assert not out.exists()


def test_an_unknown_study_and_an_unreachable_pacs_are_refused(orthanc, tmp_path, capfd):
    from spoils_tf.cli import pacs as pacs_cmd
    out = tmp_path / "out"
    code = pacs_cmd.main(["--url", f"{orthanc}/dicom-web", "--study", "1.2.3.999",
                          "--out", str(out)])
    assert code == 2 and "--study" in capfd.readouterr().err
    code = pacs_cmd.main(["--url", f"http://127.0.0.1:{_free_port()}/dicom-web", "--study",
                          STUDY, "--out", str(out)])
    assert code == 2 and "no answer from the PACS" in capfd.readouterr().err
    assert not out.exists()


def test_weighting_rule():
    from spoils_tf.serve import pacs
    # the rule of spoils_tf.data.mr_weighting: timings when they decide, else the name
    assert pacs.weighting("SAG T2 TSE", 12.0) == "T2"          # TE alone decides nothing
    assert pacs.weighting("SAG T2 TSE", 12.0, 500.0) == "T1"   # TE and TR do
    assert pacs.weighting("sag t1", None) == "T1"
    assert pacs.weighting("SAG", 100.0) == "T2" and pacs.weighting("SAG", 10.0, 550.0) == "T1"
    assert pacs.weighting("SAG STIR", 40.0, 4000.0, 150.0) == "STIR"
    assert pacs.weighting("SAG", 45.0) is None and pacs.weighting("T1 T2 map", None) is None

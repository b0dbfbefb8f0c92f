"""``spoils serve`` (``spoils_tf.serve.web`` + ``uploads``) through FastAPI's TestClient.

One app with the shipped models (``spoils_tf.weights``, loaded once for the module) answers
every request; the scans are the synthetic patient of ``conftest.case`` as a PNG or as a
sagittal DICOM series whose PatientName/PatientID are sentinel strings. Checked: the form's
ODI (hand-worked: 18 / (5 x 9) x 100 = 40 %) and its refusals, bad uploads answered with a
message naming the file (400), the size limits (413, for the body and for what a zip unpacks
to), zip path traversal, the per-request folder gone after success and after each failure,
and the sentinels nowhere in the page, the JSON errors or the logs.
"""

from __future__ import annotations

import io
import logging
import pathlib
import re
import zipfile

import numpy as np
import PIL.Image
import pytest
from dicom_writer import write_mr_slice

from spoils_tf.serve import uploads, web

pytest.importorskip("fastapi")

SPACING = (1.2, 1.2)                       # mm, of the 256 x 256 synthetic slice
SAGITTAL = [0, 1, 0, 0, 0, -1]
AXIAL = [1, 0, 0, 0, 1, 0]
SENTINEL_NAME = "Sentinelname^Zzyzx"
SENTINEL_ID = "SENTINEL-ID-98765"
PHI = {"PatientName": SENTINEL_NAME, "PatientID": SENTINEL_ID,
       "PatientBirthDate": "19010203"}
SECTIONS_40 = {f"odi_section_{k}": v for k, v in
               zip(range(1, 11), ["2", "3", "1", "0", "4", "2", "1", "", "3", "2"])}


# === Fixtures ===
@pytest.fixture(scope="module")
def predictor():
    from spoils_tf import weights
    from spoils_tf.serve.predictor import Predictor
    return Predictor(weights.DEFAULT_BUNDLE)


@pytest.fixture()
def work(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return path


def _client(predictor, work, **kw):
    from fastapi.testclient import TestClient
    return TestClient(web.create_app(web.ServeConfig(work_dir=work, **kw), predictor))


@pytest.fixture()
def client(predictor, work):
    return _client(predictor, work)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _series(folder: pathlib.Path, image: np.ndarray, iop=SAGITTAL, n: int = 3) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_mr_slice(folder / f"im{k:03d}.dcm", image.astype(np.uint16) * 4, k, iop=iop,
                           phi=PHI, spacing_between=4.0, pixel_spacing=SPACING,
                           slice_thickness=4.0) for k in range(n)]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _post(client, files, **fields):
    return client.post("/api/report", files=files, data=fields)


def _error(resp, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    return resp.json()["error"]


# === The form, without the models ===
def test_read_scores_odi_from_sections_and_percentage():
    s = web.read_scores({"nrs": "7", **SECTIONS_40})
    assert s.odi == pytest.approx(40.0) and s.nrs == 7
    assert "18 / (5 x 9) x 100" in s.odi_note and "Sex life" in s.odi_note
    s = web.read_scores({"nrs": "3", "odi": "22.5"})
    assert (s.odi, s.nrs, s.odi_note) == (22.5, 3, None)
    assert web.read_scores({"nrs": " ", "odi": ""}) == web.Scores(None, None, None)


@pytest.mark.parametrize("fields, message", [
    ({"nrs": "7", "odi": "40", **SECTIONS_40}, "field 'odi': given both as a percentage and as "
                                              "questionnaire sections"),
    ({"nrs": "7", "odi_section_1": "2", "odi_section_2": "3"},
     "field 'odi sections': ODI sections: 2 of 10 answered; at least 8"),
    ({"nrs": "7", **SECTIONS_40, "odi_section_4": "6"}, "ODI section 'Walking'"),
    ({"nrs": "7"}, "field 'odi': missing"),
    ({"odi": "40"}, "field 'nrs': missing"),
    ({"nrs": "11", "odi": "40"}, "field 'nrs': NRS must be an integer in 0..10"),
    ({"nrs": "5", "odi": "140"}, "field 'odi': ODI must be in 0..100"),
])
def test_read_scores_refusals_name_the_field(fields, message):
    with pytest.raises(uploads.UploadError, match=message.replace("(", r"\(")):
        web.read_scores(fields)


def test_read_pixel_spacing():
    assert web.read_pixel_spacing({}) is None
    assert web.read_pixel_spacing({"pixel_spacing_row_mm": "0.5"}) == (0.5, 0.5)
    assert web.read_pixel_spacing({"pixel_spacing_row_mm": "0.5",
                                   "pixel_spacing_col_mm": "0.7"}) == (0.5, 0.7)
    with pytest.raises(uploads.UploadError, match="field 'pixel_spacing_row_mm': 'abc' is not"):
        web.read_pixel_spacing({"pixel_spacing_row_mm": "abc"})
    with pytest.raises(uploads.UploadError, match="field 'pixel_spacing_row_mm': empty"):
        web.read_pixel_spacing({"pixel_spacing_col_mm": "0.5"})


def test_page_and_config(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="report-form"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    cfg = client.get("/api/config").json()
    assert cfg["odi_sections"][7] == "Sex life" and cfg["odi_min_answered"] == 8
    assert cfg["max_upload_bytes"] == web.DEFAULT_MAX_UPLOAD_BYTES


# === Bad uploads: readable errors, nothing left behind ===
@pytest.mark.parametrize("files, fields, status, message", [
    ([("files", ("", b"", "application/octet-stream"))], {"nrs": "5", "odi": "40"}, 400,
     "field 'scan': no file uploaded"),
    ([("files", (".DS_Store", b"x", "application/octet-stream"))], {}, 400,
     "no file uploaded"),
    ([("files", ("knee.png", b"GIF89a not a png at all", "image/png"))], {}, 400,
     "knee.png: named .png but its content has no known file signature; expected a PNG image"),
    ([("files", ("notes.txt", b"hello, this is text", "text/plain"))], {}, 400,
     "notes.txt: not a supported file; expected a DICOM series"),
    ([("files", ("scan.dcm", b"\0" * 300, "application/dicom"))], {}, 400,
     "scan.dcm: not a DICOM Part 10 file (no 'DICM' at byte 128)"),
    ([("files", ("empty.nii", b"", "application/octet-stream"))], {}, 400,
     "empty.nii: empty file (0 bytes)"),
    ([("files", ("series.zip", b"PK\x03\x04 broken", "application/zip"))], {}, 400,
     "series.zip: not a readable zip archive"),
    ([("files", ("evil.zip", _zip({"../../etc/evil.dcm": b"x"}), "application/zip"))], {}, 400,
     "evil.zip: member '../../etc/evil.dcm': unsafe path"),
    ([("files", ("abs.zip", _zip({"/tmp/abs.dcm": b"x"}), "application/zip"))], {}, 400,
     "unsafe path (absolute or with '..')"),
    ([("files", ("nested.zip", _zip({"inner.zip": _zip({"a": b"b"})}), "application/zip"))],
     {}, 400, "nested.zip: inner.zip: a zip inside the zip"),
    ([("files", ("a.png", _png_bytes(np.zeros((80, 80), np.uint8)), "image/png")),
      ("files", ("b.png", _png_bytes(np.zeros((80, 80), np.uint8)), "image/png"))], {}, 400,
     "a.png: a PNG image among 2 files"),
    ([("files", ("a.png", b"x", "image/png"))], {"colour": "red"}, 400,
     "field 'colour': unknown form field"),
    ([("files", ("slice.png", _png_bytes(np.zeros((80, 80), np.uint8)), "image/png"))],
     {"nrs": "5", "odi": "40"}, 422,
     "slice.png: field 'pixel spacing': missing"),
    ([("files", ("slice.png", _png_bytes(np.zeros((80, 80), np.uint8)), "image/png"))],
     {"pixel_spacing_row_mm": "40"}, 422,
     "field 'pixel spacing (mm)': pixel spacing 40 mm is outside the plausible 0.1-5 mm"),
])
def test_bad_upload_is_a_readable_error_and_leaves_nothing(client, work, files, fields, status,
                                                           message):
    resp = client.post("/api/report", files=files, data=fields)
    text = _error(resp, status)
    assert message in text
    assert str(work) not in text and "incoming" not in text     # no server paths
    assert list(work.iterdir()) == []


def test_not_a_form(client, work):
    text = _error(client.post("/api/report", content=b"{}",
                              headers={"content-type": "application/json"}), 400)
    assert "not a form upload" in text
    assert list(work.iterdir()) == []


def test_upload_over_the_limit_is_413(predictor, work):
    client = _client(predictor, work, max_upload_bytes=100_000)
    big = b"\x89PNG\r\n\x1a\n" + bytes(200_000)
    text = _error(_post(client, {"files": ("big.png", big, "image/png")}), 413)
    assert "larger than the limit of 0.1 MB" in text and "--max-upload-mb" in text
    assert list(work.iterdir()) == []
    # without a Content-Length the body is counted as it streams
    receiver = uploads.MultipartReceiver("multipart/form-data; boundary=xyz", work / "r",
                                         max_bytes=1000)
    receiver.feed(b'--xyz\r\nContent-Disposition: form-data; name="files"; '
                  b'filename="a.png"\r\n\r\n')
    with pytest.raises(uploads.UploadTooLarge, match="0.001 MB"):
        for _ in range(10):
            receiver.feed(bytes(200))
    assert receiver.received <= 1000 + 200


def test_zip_bomb_is_413_by_the_bytes_not_the_directory(predictor, work, tmp_path):
    client = _client(predictor, work, max_extracted_bytes=1_000_000)
    bomb = _zip({"a.dcm": bytes(3_000_000)})     # ~3 kB compressed
    assert len(bomb) < 20_000
    text = _error(_post(client, {"files": ("bomb.zip", bomb, "application/zip")}), 413)
    assert "bomb.zip: unpacks to more than the limit of 1 MB" in text
    # an archive whose directory understates the size: refused, never unpacked past the limit
    lying = bytearray(bomb)
    info = zipfile.ZipFile(io.BytesIO(bomb)).infolist()[0]
    for offset in (info.header_offset + 22, bomb.rfind(b"PK\x01\x02") + 24):   # sizes
        lying[offset:offset + 4] = (1000).to_bytes(4, "little")
    path = tmp_path / "lying.zip"
    path.write_bytes(bytes(lying))
    with pytest.raises(uploads.UploadError):     # too large, or damaged: never written whole
        uploads.extract_zip(path, "lying.zip", tmp_path / "out", max_extracted_bytes=1_000_000)
    assert sum(p.stat().st_size for p in (tmp_path / "out").iterdir()) <= 1_000_000
    assert list(work.iterdir()) == []


# === Reports ===
def test_png_with_odi_sections_gives_the_report_page(client, work, case):
    image, _ = case
    resp = _post(client, {"files": ("slice.png", _png_bytes(image), "image/png")},
                 nrs="7", pixel_spacing_row_mm=str(SPACING[0]), **SECTIONS_40)
    assert resp.status_code == 200, resp.text[:500]
    page = resp.text
    assert "SPOILS lumbar spine MRI report" in page and 'id="new-report"' in page
    assert "decision support" in page.lower()                 # the disclaimer
    assert "L4-L5" in page and "L5-S1" in page                # levels
    assert re.search(r"Disc height.*?\d+(\.\d+)? mm", page, re.S)
    assert "ODI 40.0 % computed from 9 of 10 questionnaire sections" in page
    assert "Recommendation" in page
    assert resp.headers["cache-control"] == "no-store"
    assert list(work.iterdir()) == []


def test_dicom_series_zip_and_files_show_no_identifier(client, work, case, tmp_path, caplog,
                                                        capfd):
    image, _ = case
    paths = _series(tmp_path / "series", image)
    caplog.set_level(logging.DEBUG)
    as_zip = _zip({f"study/{p.name}": p.read_bytes() for p in paths} | {"DICOMDIR": b"x"})
    pages = [_post(client, {"files": ("study.zip", as_zip, "application/zip")},
                   nrs="6", odi="38"),
             client.post("/api/report", data={"nrs": "6", "odi": "38"},
                         files=[("folder", (f"series/{p.name}", p.read_bytes(),
                                            "application/dicom")) for p in paths])]
    for resp in pages:
        assert resp.status_code == 200, resp.text[:500]
        assert "L4-L5" in resp.text
    out, err = capfd.readouterr()
    everything = "".join(r.text for r in pages) + caplog.text + out + err
    for word in (SENTINEL_NAME, "Sentinelname", "Zzyzx", SENTINEL_ID, "19010203"):
        assert word not in everything
    assert "study.zip" not in caplog.text and "im000" not in caplog.text   # no file names
    assert "report: status ok, input dicom_series" in caplog.text
    assert list(work.iterdir()) == []


def test_axial_series_is_refused_without_identifier_or_server_path(client, work, case, tmp_path,
                                                                   caplog):
    image, _ = case
    paths = _series(tmp_path / "axial", image, iop=AXIAL)
    caplog.set_level(logging.DEBUG)
    resp = client.post("/api/report", files=[("files", (p.name, p.read_bytes(),
                                                        "application/dicom")) for p in paths])
    text = _error(resp, 422)
    assert "the uploaded DICOM series (3 files)" in text and "sagittal" in text
    for word in (SENTINEL_NAME, "Zzyzx", SENTINEL_ID, str(work), "spoils-upload"):
        assert word not in text and word not in caplog.text
    assert list(work.iterdir()) == []



def test_a_bug_is_500_with_a_generic_message_and_the_folder_is_gone(client, work, case,
                                                                   monkeypatch, caplog):
    from spoils_tf.serve import run

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(run, "run_predict", broken)
    resp = _post(client, {"files": ("slice.png", _png_bytes(case[0]), "image/png")},
                 pixel_spacing_row_mm="1.2")
    assert "internal error" in _error(resp, 500)
    assert "simulated bug" in caplog.text            # the traceback is in the server's log
    assert list(work.iterdir()) == []


# === The command ===
def test_serve_command_refuses_bad_options_before_loading(capsys, tmp_path):
    from spoils_tf.cli import serve as serve_cmd
    assert serve_cmd.main(["--port", "0", "--max-upload-mb", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--max-upload-mb -1.0: expected a positive number" in err and "--port 0" in err
    assert serve_cmd.main(["--slices", "2"]) == 2
    assert serve_cmd.main(["--models", str(tmp_path / "no_bundle")]) == 2
    assert "no_bundle" in capsys.readouterr().err
    assert serve_cmd._is_loopback("127.0.0.1") and serve_cmd._is_loopback("::1")
    assert not serve_cmd._is_loopback("0.0.0.0")
    assert web.DEFAULT_HOST == "127.0.0.1"


def test_serve_help_is_fast_and_lists_the_limits():
    import subprocess
    import sys
    code = ("import sys; import spoils_tf.cli.serve, spoils_tf.serve.web; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'fastapi', 'uvicorn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "spoils_tf.cli", "serve", "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert "--max-upload-mb" in helped and "127.0.0.1" in helped


# === Volumes ===
def test_sniff_volume_signatures(tmp_path):
    import gzip
    nii = bytearray(352)
    nii[:4] = (348).to_bytes(4, "little")
    nii[344:348] = b"n+1\0"
    cases = {"v.nii": bytes(nii), "v.nii.gz": gzip.compress(bytes(nii)),
             "v.nrrd": b"NRRD0004\ntype: uint8\n", "v.mha": b"ObjectType = Image\nNDims = 3\n"
             b"ElementDataFile = LOCAL\n", "IM0001": bytes(128) + b"DICM" + bytes(10)}
    expected = {"v.nii": "nii", "v.nii.gz": "nii.gz", "v.nrrd": "nrrd", "v.mha": "mha",
                "IM0001": "dicom"}
    for name, data in cases.items():
        (tmp_path / "f").write_bytes(data)
        assert uploads.sniff(tmp_path / "f", name) == expected[name]
    (tmp_path / "f").write_bytes(bytes(nii))
    with pytest.raises(uploads.UploadError, match="v.nii.gz: named .nii.gz but its content has "
                                                  "no known file signature"):
        uploads.sniff(tmp_path / "f", "v.nii.gz")


def test_mha_image_with_its_header_spacing_gives_a_report(client, work, case, tmp_path):
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(case[0])
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(tmp_path / "slice.mha"))
    resp = _post(client, {"files": ("slice.mha", (tmp_path / "slice.mha").read_bytes(),
                                    "application/octet-stream")}, nrs="4", odi="20")
    assert resp.status_code == 200, resp.text[:500]
    assert "L4-L5" in resp.text and "image header" in resp.text
    assert list(work.iterdir()) == []

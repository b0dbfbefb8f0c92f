"""``spoils serve``: a local web page that turns one uploaded scan + ODI + NRS into the report.

FastAPI with one plain HTML/JS page (``spoils_tf/serve/static/``), not Gradio or Streamlit:
two small dependencies (FastAPI, uvicorn) instead of a UI framework that fetches assets or
phones home, a page that works offline on a closed hospital network, a form whose every
field and error message is ours and stable (so tests and ``tools/bad_inputs.py`` can pin them),
and an app that ``fastapi.testclient.TestClient`` and a real browser can both test.

Routes (:func:`create_app`):

* ``GET /``: the upload page; ``GET /static/app.js``: its script.
* ``GET /api/config``: what the page needs to build its form: the ODI sections
  (``spoils_tf.clinical.odi``), the limits, the accepted inputs.
* ``POST /api/report`` (``multipart/form-data``): the fields of :data:`FORM_FIELDS` and the
  scan under :data:`FILE_FIELDS`. 200: the report page, ``spoils_tf.serve.report.render_html``
  of ``spoils_tf.serve.run.run_predict``'s report (the same page ``spoils predict`` writes),
  with a "new report" link. Refusals are JSON ``{"error": message}``: 400 a bad form or upload
  (the message names the field or file), 413 an upload over a size limit, 422 a scan that
  the reader refuses (not sagittal, no pixel spacing, ...; the message names the uploaded file
  as the user named it). 500: a bug, logged with its traceback.

Safety: each request gets one fresh folder (``tempfile.mkdtemp`` under ``work_dir``) that holds
everything it writes (``spoils_tf.serve.uploads``: the body is parsed as it streams, never
spooled elsewhere) and is removed when the request ends, whatever the outcome. Nothing
is kept between requests. Logs carry the status, the input kind, counts and timings: never a
file name, a field value or a header value. The DICOM reader reads no patient field, and the
report carries none. Responses are ``Cache-Control: no-store``. :func:`serve` binds to
127.0.0.1 unless told otherwise.
"""

import dataclasses
import importlib.resources
import logging
import pathlib
import shutil
import tempfile
import threading
import time
from typing import Any, Optional

from spoils_tf.clinical import odi as odi_lib
from spoils_tf.errors import SpoilsError
from spoils_tf.serve import uploads

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1000 * 1000
DEFAULT_MAX_EXTRACTED_BYTES = 2000 * 1000 * 1000
FILE_FIELDS = ("files", "folder")      # the page's file input and its folder input
SECTION_FIELDS = tuple(f"odi_section_{k}" for k in range(1, odi_lib.N_SECTIONS + 1))
SPACING_FIELDS = ("pixel_spacing_row_mm", "pixel_spacing_col_mm")
FORM_FIELDS = ("nrs", "odi", *SECTION_FIELDS, *SPACING_FIELDS)
# ``spoils predict`` option names in the reader's messages -> the form's words
CLI_OPTION_LABELS = {"--pixel-spacing ROW_MM COL_MM": "the pixel spacing fields (mm)",
                     "--pixel-spacing": "pixel spacing (mm)"}
NEW_REPORT_LINK = ('<p style="font-family:sans-serif"><a href="/" id="new-report">New report'
                   '</a> <span style="color:#666;font-size:0.8em">(made by spoils serve; '
                   'nothing of this upload is kept on the server)</span></p>')
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # the report page replaces the upload page's document, so its inline CSS and data: image
    # must be allowed here; nothing may be fetched from elsewhere
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'",
}


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How ``spoils serve`` runs.

    Attributes:
        models_dir: the model bundle (None: the shipped one, ``spoils_tf.weights``).
        max_upload_bytes: the largest request body accepted (413 above).
        max_extracted_bytes: the most a zip may unpack to (413 above).
        work_dir: where per-request folders are made (None: the system's temp folder).
        slices: sagittal slices read around the middle one (as ``spoils predict --slices``).
        precision: ``"float32"`` or ``"bfloat16"``.
    """
    models_dir: Optional[pathlib.Path] = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES
    work_dir: Optional[pathlib.Path] = None
    slices: int = 1
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class Scores:
    """The form's scores: ``odi`` (%) and ``nrs`` (both None: grades only), and ``odi_note``,
    how the ODI was worked out from the questionnaire (None when typed in or absent)."""
    odi: Optional[float]
    nrs: Optional[int]
    odi_note: Optional[str]


# === The form ===
def _given(fields: dict[str, str], name: str) -> Optional[str]:
    value = fields.get(name)
    return value.strip() if value is not None and value.strip() else None


def check_fields(fields: dict[str, str]) -> None:
    """Raises :class:`uploads.UploadError` naming the first field not in :data:`FORM_FIELDS`
    (a file field sent empty without a file name, an empty file input, is allowed)."""
    for name, value in fields.items():
        if name in FILE_FIELDS:
            if value:
                raise uploads.UploadError(None, name, "sent as text, not as a file; use the "
                                                      "page's form")
        elif name not in FORM_FIELDS:
            raise uploads.UploadError(None, uploads.display_name(name),
                                      "unknown form field; use the page's form")


def read_scores(fields: dict[str, str]) -> Scores:
    """NRS and the ODI from the form: the ODI as a percentage (``odi``) or from the ten
    questionnaire sections (``odi_section_1``..``odi_section_10``, 0..5, blank = unanswered;
    ``clinical.odi.odi_from_sections``), not both. No score at all: grades only.

    Raises:
        uploads.UploadError: naming the field: the ODI given both ways; too few sections
            answered or a section out of 0..5; one of ODI and NRS without the other; an ODI
            outside 0..100 or an NRS not a whole number 0..10 (``predictor.check_scores``).
    """
    from spoils_tf.serve.predictor import check_scores
    sections = [_given(fields, f) for f in SECTION_FIELDS]
    odi_text, nrs_text = _given(fields, "odi"), _given(fields, "nrs")
    note = None
    if any(s is not None for s in sections):
        if odi_text is not None:
            raise uploads.UploadError(None, "odi", "given both as a percentage and as "
                                                   "questionnaire sections; give one of them")
        try:
            score = odi_lib.odi_from_sections(sections)
        except ValueError as e:
            raise uploads.UploadError(None, "odi sections", str(e)) from None
        odi_value: Any = score.percent
        note = score.explanation()
    else:
        odi_value = odi_text
    try:
        odi, nrs = check_scores(odi_value, nrs_text)
    except ValueError as e:      # "odi: ..." / "nrs: ..."
        field, _, reason = str(e).partition(": ")
        reason = reason.replace("--odi", "ODI").replace("--nrs", "NRS")
        raise uploads.UploadError(None, field, reason) from None
    return Scores(odi, nrs, note)


def read_pixel_spacing(fields: dict[str, str]) -> Optional[tuple[float, float]]:
    """The pixel spacing (row_mm, col_mm) typed in, or None. The column spacing may be left
    blank for square pixels (it is then the row spacing); the range is checked by the reader
    (``images.check_pixel_spacing``).

    Raises:
        uploads.UploadError: naming the field: not a number, or a column without a row.
    """
    row, col = (_given(fields, f) for f in SPACING_FIELDS)
    if row is None:
        if col is not None:
            raise uploads.UploadError(None, SPACING_FIELDS[0], "empty but the column spacing "
                                                               "is given; give the row spacing "
                                                               "(mm)")
        return None
    values = []
    for name, text in zip(SPACING_FIELDS, (row, col if col is not None else row)):
        try:
            values.append(float(text))
        except ValueError:
            raise uploads.UploadError(None, name, f"{text!r} is not a number; expected the "
                                                  "pixel spacing in mm, e.g. 0.5") from None
    return values[0], values[1]


# === One request ===
class ReportService:
    """The loaded models and the work of one request; one prediction at a time (a lock).

    Args:
        config: :class:`ServeConfig`.
        predictor: an already loaded ``Predictor`` (tests); else one is loaded from
            ``config.models_dir`` (the shipped bundle when None) here, once.

    Raises:
        FileNotFoundError, ValueError (``bundle.BundleError``): the bundle does not load.
    """

    def __init__(self, config: ServeConfig, predictor=None):
        from spoils_tf import weights
        from spoils_tf.serve.predictor import Predictor
        self.config = config
        self.predictor = predictor or Predictor(
            config.models_dir if config.models_dir is not None else weights.DEFAULT_BUNDLE,
            precision=config.precision)
        self._lock = threading.Lock()

    def report_html(self, form: uploads.ReceivedForm, folder: pathlib.Path) -> str:
        """The report page for a received form whose files lie in ``folder``.

        Raises:
            uploads.UploadError: a bad form or upload (:func:`check_fields`,
                :func:`read_scores`, :func:`read_pixel_spacing`, ``uploads.prepare_input``).
            SpoilsError, ValueError, FileNotFoundError: the reader refused the scan; the
                message names the uploaded file, never the request folder.
        """
        from spoils_tf.serve import report as html_report
        from spoils_tf.serve import run
        check_fields(form.fields)
        for field in form.file_fields:
            if field not in FILE_FIELDS:
                raise uploads.UploadError(None, uploads.display_name(field),
                                          "unknown file field; use the page's form")
        scores = read_scores(form.fields)
        spacing = read_pixel_spacing(form.fields)
        prepared = uploads.prepare_input(form.files, folder,
                                         max_extracted_bytes=self.config.max_extracted_bytes)
        out = folder / "report"
        try:
            with self._lock:
                report = run.run_predict(prepared.path, None, out, odi=scores.odi,
                                         nrs=scores.nrs, pixel_spacing=spacing,
                                         slices=self.config.slices,
                                         precision=self.config.precision,
                                         predictor=self.predictor)
        except (SpoilsError, ValueError, FileNotFoundError) as e:
            raise SpoilsError(public_message(str(e), folder, prepared)) from None
        if scores.odi_note:
            report.setdefault("notes", []).append(scores.odi_note)
        if prepared.skipped:
            report.setdefault("notes", []).append(
                f"{len(prepared.skipped)} side file(s) of the upload left out (hidden files, "
                "DICOMDIR)")
        overlay_png = (out / run.REPORT_FILES["overlay"]).read_bytes()
        page = html_report.render_html(report, overlay_png)
        log.info("report: status %s, input %s, %d disc level(s)", report.get("status"),
                 prepared.kind, len(report.get("discs") or []))
        return page.replace("<body>", "<body>" + NEW_REPORT_LINK, 1)


def public_message(message: str, folder: pathlib.Path, prepared: uploads.PreparedInput) -> str:
    """``message`` with the request folder's paths replaced by what the user uploaded, and
    ``spoils predict``'s option names by the form's."""
    text = message.replace(str(prepared.path), prepared.name)
    for option, label in CLI_OPTION_LABELS.items():
        text = text.replace(option, label)
    for f in {str(folder), str(pathlib.Path(folder).resolve())}:
        text = text.replace(f, "(upload)")
    return text


# === The app ===
def _static(name: str) -> str:
    return importlib.resources.files("spoils_tf.serve").joinpath("static", name).read_text(
        encoding="utf-8")


def create_app(config: ServeConfig = ServeConfig(), predictor=None):
    """The FastAPI app (module docstring); loads the models now, once.

    Raises:
        FileNotFoundError, ValueError: the bundle does not load (``ReportService``).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    service = ReportService(config, predictor)
    app = FastAPI(title="SPOILS", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/app.js")
    def script() -> Response:
        return Response(_static("app.js"), media_type="text/javascript")

    @app.get("/api/config")
    def page_config() -> dict[str, Any]:
        return {"odi_sections": list(odi_lib.SECTIONS),
                "odi_max_section_score": odi_lib.MAX_SECTION_SCORE,
                "odi_min_answered": odi_lib.MIN_ANSWERED_SECTIONS,
                "max_upload_bytes": config.max_upload_bytes,
                "max_upload": uploads.mb(config.max_upload_bytes),
                "accepted": uploads.ACCEPTED}

    @app.post("/api/report")
    async def make_report(request: Request) -> Response:
        t0 = time.perf_counter()
        folder = pathlib.Path(tempfile.mkdtemp(prefix="spoils-upload-", dir=config.work_dir))
        try:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > config.max_upload_bytes:
                raise uploads.UploadTooLarge(
                    None, None, f"the upload ({uploads.mb(int(length))}) is larger than the "
                                f"limit of {uploads.mb(config.max_upload_bytes)} (spoils serve "
                                "--max-upload-mb); upload one series, or a smaller file")
            receiver = uploads.MultipartReceiver(request.headers.get("content-type"), folder,
                                                 max_bytes=config.max_upload_bytes)
            try:
                async for chunk in request.stream():
                    receiver.feed(chunk)
                form = receiver.finish()
            finally:
                receiver.close()
            page = await run_in_threadpool(service.report_html, form, folder)
            log.info("report made in %.0f ms", (time.perf_counter() - t0) * 1000)
            return HTMLResponse(page)
        except uploads.UploadError as e:
            log.info("refused (%d): %s", e.status_code, type(e).__name__)
            return JSONResponse({"error": str(e)}, status_code=e.status_code)
        except (SpoilsError, ValueError, FileNotFoundError) as e:
            log.info("refused (422): the reader refused the scan (%s)", type(e).__name__)
            return JSONResponse({"error": str(e)}, status_code=422)
        except Exception:
            log.exception("internal error while making a report")
            return JSONResponse({"error": "internal error: the report could not be made; the "
                                          "server log has the details"}, status_code=500)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return app


def serve(config: ServeConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Loads the models and serves the page with uvicorn until interrupted; this package's
    log lines (status, kinds, timings) go to uvicorn's log handler."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG
    app = create_app(config)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["spoils_tf"] = {"handlers": ["default"], "level": "INFO",
                                          "propagate": False}
    uvicorn.run(app, host=host, port=port, log_level="info", log_config=log_config)

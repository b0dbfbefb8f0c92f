"""tools/bad_inputs.py: a handful of its cases through the tool's own code path, and its judge.

The cases run here are the tool's functions (``bad_inputs.CASES``), each in a ``Workspace``
under ``tmp_path``, so a regression in a reader or command shows here as it does in the
catalogue's table. The judge is checked on runs made by hand: an escaping exception, a
message without the field, or a file left behind must each give a FAIL.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from spoils_tf.errors import SpoilsError

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "bad_inputs.py"
_spec = importlib.util.spec_from_file_location("bad_inputs", _TOOL)
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs     # its dataclasses look their module up there
_spec.loader.exec_module(bad_inputs)

# one or more per command, the ones fixed with the tool among them
SAMPLE = (
    "predict/dicom_no_pixel_data",
    "predict/mha_truncated",               # SimpleITK's multi-line message on one line
    "predict/out_folder_of_other_files",
    "segment/seg_truncated_keras",         # builds the tiny models
    "convert-spider/spider_out_is_a_file",
    "convert-spider/spider_pfirrmann_9",
    "decide/decide_config_wrong_inner_type",
    "features/features_empty_labelme",
    "features/features_out_is_a_folder",
    "labelme/lm_vertex_far_outside",
    "predict/dicom_rgb",                   # clinical inputs: refused from the header
    "predict/dicom_jpeg_lossless_no_decoder",
    "predict/nifti_no_orientation",
    "predict/nifti_4d",
)
# accepted with a result checked by the case: a T1 series measured and not graded, the T2
# series of a T1 + T2 folder chosen, a flipped NIfTI put upright
SAMPLE_ACCEPTED = (
    "predict/dicom_t1_series",
    "predict/dicom_t1_and_t2_folder",
    "predict/nifti_gz_flipped",
)


def test_catalogue_covers_every_command_with_unique_ids():
    ids = [c.id for c in bad_inputs.CASES]
    assert len(ids) == len(set(ids)) >= 74 + 22
    assert {c.command for c in bad_inputs.CASES} == {
        "predict", "segment", "convert-spider", "decide", "features", "labelme",
        *(("web",) if bad_inputs.HAS_WEB else ())}
    assert set(SAMPLE) | set(SAMPLE_ACCEPTED) <= set(ids)


def test_sample_cases_are_clear_errors(tmp_path):
    cases = [c for c in bad_inputs.CASES if c.id in SAMPLE]
    result = bad_inputs.run_catalogue(cases, tmp_path)
    assert result["n_cases"] == len(SAMPLE)
    for rec in result["cases"]:
        assert rec["verdict"] == bad_inputs.CLEAR, rec
        assert rec["names_file"] and rec["names_field"] is not False, rec
        assert rec["left_behind"] == [], rec
    assert result["counts"] == {bad_inputs.CLEAR: len(SAMPLE), bad_inputs.CORRECT: 0,
                                "FAIL": 0}
    md = bad_inputs.markdown({**result, "machine": {}, "command": ["x"], "git_commit": None})
    assert md.count("| clear error |") == len(SAMPLE)


def _run(**kwargs) -> "bad_inputs.Run":
    fields = dict(argv=["decide"], code=2, exception=None, stdout="",
                  stderr="spoils decide: x.json: field 'rules': bad\n", new=[], changed=[])
    fields.update(kwargs)
    return bad_inputs.Run(**fields)


@pytest.mark.parametrize("run, why", [
    (_run(code=None, exception=KeyError("rules")), "traceback: KeyError"),
    (_run(code=0), "exit 0, expected 2"),
    (_run(stderr="spoils decide: bad\n"), "names neither file nor field"),
    (_run(stderr="spoils decide: x.json: bad\n"), "does not name the field"),
    (_run(new=["out/report.json"]), "partial output: out/report.json"),
    (_run(changed=["out/thesis.tex"]), "out/thesis.tex (changed)"),
    (_run(stderr="spoils decide: x.json: field 'rules': bad\nmore\n"), "2 lines on stderr"),
    (_run(argv=None, code=None), "accepted, expected a SpoilsError"),
    (_run(argv=None, code=None, exception=TypeError("x")), "traceback: TypeError"),
])
def test_judge_fails_what_is_not_a_clear_error(run, why):
    verdict = bad_inputs.refused(run, ["x.json"], ["rules"])["verdict"]
    assert verdict.startswith("FAIL (") and why in verdict, verdict


def test_judge_accepts_a_clear_error_and_a_batch_item():
    assert bad_inputs.refused(_run(), ["x.json"], ["rules"])["verdict"] == bad_inputs.CLEAR
    lib = _run(argv=None, code=None, stderr="", exception=SpoilsError("x.json", "rules", "bad"))
    assert bad_inputs.refused(lib, ["x.json"], ["rules"])["verdict"] == bad_inputs.CLEAR
    batch = _run(code=1, new=["out", "out/s0_mask.png"])
    rec = bad_inputs.refused(batch, ["x.json"], ["rules"], codes=(1,),
                             may_write=["out", "out/s0_*"])
    assert rec["verdict"] == bad_inputs.CLEAR and rec["left_behind"] == []


def test_sample_clinical_inputs_are_read_right(tmp_path):
    cases = [c for c in bad_inputs.CASES if c.id in SAMPLE_ACCEPTED]
    result = bad_inputs.run_catalogue(cases, tmp_path)
    for rec in result["cases"]:
        assert rec["verdict"] == bad_inputs.CORRECT, rec
    assert result["counts"][bad_inputs.CORRECT] == len(SAMPLE_ACCEPTED)

"""The ``spoils`` console script: one subcommand per pipeline stage.

Each subcommand is a module of this package with a ``main(argv) -> int`` that parses its own
arguments, calls the library and maps the library's exceptions to exit codes
(``spoils_tf.errors``); this module only dispatches, importing the command lazily so that
``spoils synth`` does not pay for importing TensorFlow. ``python -m spoils_tf.cli`` runs it too.

A :class:`spoils_tf.errors.SpoilsError` escaping a subcommand (input it refused) is printed as
one line ``spoils <command>: <message>`` on stderr and gives :data:`~spoils_tf.errors.
EXIT_BAD_INPUT`, without a traceback. Any other exception propagates: it is a bug.
"""

from __future__ import annotations

import importlib
import sys

from spoils_tf.errors import EXIT_BAD_INPUT, EXIT_OK, SpoilsError

# subcommand -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert-spider": ("spoils_tf.cli.convert_spider:main",
                       "convert SPIDER PNG masks to 14-class LabelMe files + discs.csv"),
    "synth": ("spoils_tf.cli.synth:main",
              "generate the deterministic synthetic cohort (LabelMe + ground truth)"),
    "folds": ("spoils_tf.cli.folds:main",
              "write patient-grouped, grade-stratified k folds to folds.json"),
    "features": ("spoils_tf.cli.features:main",
                 "measure every disc (mm) and write the feature table"),
    "crops": ("spoils_tf.cli.crops:main",
              "write oriented, normalised disc crops with an index CSV"),
    "segment": ("spoils_tf.cli.segment:main",
                "segment one image with a trained model (mask, overlay, areas)"),
    "predict": ("spoils_tf.cli.predict:main",
                "one patient's MRI -> PHI-free report.json / report.html / overlay"),
    "bundle": ("spoils_tf.cli.bundle:main",
               "publish experiment-trained models as a model bundle for `spoils predict`"),
    "decide": ("spoils_tf.cli.decide:main",
               "decision support from a grade class + ODI + NRS"),
    "predicted-masks": ("spoils_tf.cli.predicted_masks:main",
                        "a dataset of each fold's held-out predicted masks ('compare': grading "
                        "on them vs ground truth)"),
    "serve": ("spoils_tf.cli.serve:main",
              "a local web page: upload a scan, give ODI + NRS, see the report"),
    "pacs": ("spoils_tf.cli.pacs:main",
             "a study on a DICOMweb PACS -> report here, DICOM SEG + SR stored back"),
    "demo": ("spoils_tf.cli.demo:main",
             "the main job on the embedded default data (`make demo`)"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {c:<{width}}  {h}" for c, (_, h) in COMMANDS.items())
    return f"usage: spoils <command> [options]\n\ncommands:\n{rows}\n\n" \
           "Run 'spoils <command> --help' for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return EXIT_OK
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"spoils: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    target, _ = COMMANDS[cmd]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"spoils: command {cmd!r} is not available in this version "
                  f"({module_name} is missing)", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    try:
        return int(getattr(module, func_name)(rest) or EXIT_OK)
    except SpoilsError as e:
        print(f"spoils {cmd}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


"""One patient's scan -> a report.

* ``inputs``: reading a picture, a 2-D MHA/NIfTI, a DICOM series or a volume as sagittal slices.
* ``segmenter``: a segmentation model loaded once (``Segmenter``), one slice -> label map.
* ``predictor``: a model bundle loaded once (``Predictor``); slices -> report dict, in stages.
* ``report``: the report's HTML page; ``overlay``: colour overlays and the labelled overlay.
* ``bundle``: the model bundle layout and cards; ``assemble``: experiment models -> a bundle.

Importing the package imports nothing else; each module imports TensorFlow only where it loads
a model.
"""

"""Shared pytest fixtures.

``case`` is one synthetic patient's slice and annotation (what the predict tests run on);
``shared_spider_dir`` points at the real SPIDER sample in ``../shared/data/spider_t2space``
(or ``$SPOILS_SHARED/data/spider_t2space``) and skips the test cleanly when it is absent.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SPOILS_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_spider_dir() -> pathlib.Path:
    path = shared_dir() / "data" / "spider_t2space"
    if not (path / "images").is_dir():
        pytest.skip(f"real SPIDER data not found at {path}")
    return path


@pytest.fixture(scope="module")
def case():
    """(image uint8 [256, 256], mask int32 [256, 256]) of one synthetic patient."""
    from spoils_tf.data import synthetic
    image, mask, _, _ = synthetic.generate_slice(synthetic.sample_patient(0, 0), 0, 2, 5,
                                                 size=256)
    return image, mask

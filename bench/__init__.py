"""Benchmarks: ingest throughput (bench/ingest.py) and recorder CPU cost (bench/recorder_cpu.py).

Run them from the repository root with the project's virtualenv, e.g.
``.venv/bin/python bench/ingest.py --help`` or ``.venv/bin/python -m bench.ingest``.
"""

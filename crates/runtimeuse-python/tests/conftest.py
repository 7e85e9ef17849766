"""Fixtures: the upstream suite's (`tests/python/conftest.py`: `runtime serve` on an ephemeral
loopback port, a local HTTP server for downloads and uploads), shared, not copied."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]

_spec = importlib.util.spec_from_file_location("upstream_fixtures", ROOT / "tests/python/conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

runtime = _fixtures.runtime
files = _fixtures.files
_binary = _fixtures._binary

"""The upstream client's suite (`tests/python/test_upstream_client.py`), run unchanged but for
its import line against this package: a program written for `runtimeuse_client` runs after
`runtimeuse_client` becomes `runtimeuse_rs`."""

import pathlib

SUITE = pathlib.Path(__file__).resolve().parents[3] / "tests/python/test_upstream_client.py"
_source = SUITE.read_text()
assert _source.count("from runtimeuse_client import (") == 1
exec(
    compile(
        _source.replace("from runtimeuse_client import (", "from runtimeuse_rs import ("),
        str(SUITE),
        "exec",
    )
)

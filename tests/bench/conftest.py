"""What every suite's test starts from: the suite run in smoke mode, written to JSON by
`BenchResult.write_json` and read back, so the tests check what a user's file holds."""

import json

import pytest

from deploylab import bench


@pytest.fixture(scope="module")
def smoke_json(tmp_path_factory):
    def run(name: str) -> dict:
        out = bench.run(name, smoke=True).write_json(tmp_path_factory.mktemp("bench") /
                                                     f"{name}.json")
        return json.loads(out.read_text())

    return run

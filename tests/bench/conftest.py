"""What every suite's test starts from: the suite run in smoke mode, written to JSON by
`BenchResult.write_json` and read back, so the tests check what a user's file holds, with
its targets readable as `bench.verdicts`."""

import json

import pytest

from deploylab import bench


@pytest.fixture(scope="module")
def smoke_json(tmp_path_factory):
    def run(name: str) -> dict:
        out = bench.run(name, smoke=True).write_json(tmp_path_factory.mktemp("bench") /
                                                     f"{name}.json")
        data = json.loads(out.read_text())
        # the targets, in this suite's shape, read back as the verdicts the CLI prints
        assert bool(bench.verdicts(data.get("targets"))) == bool(data.get("targets"))
        return data

    return run

"""Test-wide settings: offline, smoke mode, a socket guard, and a `notebook` marker.

Every test and every notebook kernel runs with the network blocked (see netguard/); a test
during which anything tried to reach beyond this machine fails, even if the library
swallowed the error.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(GUARD_DIR))
import netguard  # noqa: E402

# Before anything imports huggingface_hub (it reads these at import time).
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                  DEPLOYLAB_NETGUARD="1", MPLBACKEND="Agg")
os.environ.setdefault("DEPLOYLAB_SMOKE", "1")  # tests never run notebooks in full
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(GUARD_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
collect_ignore_glob = ["fixtures/*"]  # inputs of tests, not notebooks to validate

_log = Path(tempfile.mkstemp(prefix="deploylab-netguard-", suffix=".log")[1])
os.environ["DEPLOYLAB_NETGUARD_LOG"] = str(_log)
netguard.install()


def _logged() -> list[str]:
    return _log.read_text().splitlines() if _log.exists() else []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    before_mem, before_log = len(netguard.attempts), len(_logged())
    result = yield
    allowed = item.get_closest_marker("allow_blocked_network")
    new = netguard.attempts[before_mem:] + _logged()[before_log:]
    if allowed is not None:  # with arguments: only attempts naming one of them are excused
        new = [a for a in new if allowed.args and not any(h in a for h in allowed.args)]
    if new:
        raise AssertionError("the test tried to reach the network: " + "; ".join(new))
    return result


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_blocked_network(*hosts): the test provokes the "
                            "guard (only for these hosts, when given)")
    if os.environ.get("DEPLOYLAB_RECORD_SMOKE_RUNTIMES"):
        config.pluginmanager.register(_SmokeRuntimes(), "deploylab-smoke-runtimes")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.notebook)


# DEPLOYLAB_RECORD_SMOKE_RUNTIMES=1 .ci/run: each notebook's smoke run under nbval (kernel
# start and a cold cache included) goes into data/runtimes.json as its "smoke" time, so the
# README's run-time table gets its smoke column from the same run that validates it. A plugin
# object, not a hook here: this conftest's per-test hooks only see the tests under tests/.
class _SmokeRuntimes:
    def __init__(self):
        self.runs: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report):
        path = report.nodeid.split("::")[0]
        if not path.endswith(".ipynb"):
            return
        run = self.runs.setdefault(path, {"seconds": 0.0, "failed": False,
                                          "load": [os.getloadavg()[0]]})
        run["seconds"] += report.duration
        run["failed"] |= report.failed
        if report.when == "teardown":
            run["load"].append(os.getloadavg()[0])

    def pytest_sessionfinish(self, session):
        from deploylab import runtimes

        for path, run in self.runs.items():
            if not run["failed"] and Path(path).is_file():
                runtimes.record_test_run(path, run["seconds"], run["load"])
        if self.runs:
            runtimes.update_readme()


def pytest_sessionfinish(session, exitstatus):
    _log.unlink(missing_ok=True)

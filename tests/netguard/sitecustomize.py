# Put on PYTHONPATH by tests/conftest.py so that subprocesses (notebook kernels) are guarded.
import os

if os.environ.get("DEPLOYLAB_NETGUARD") == "1":
    import netguard

    netguard.install()

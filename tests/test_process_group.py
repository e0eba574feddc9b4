"""The gloo process group of a CPU data-parallel run is destroyed at exit, before interpreter
finalisation (where gloo's threads otherwise abort the process after the results were written)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys, tempfile
    import torch.distributed as dist

    # registered first, so it runs last (atexit is LIFO): what the interpreter is left with
    atexit.register(lambda: print("initialised at the end:", dist.is_initialized(), flush=True))
    store = os.path.join(tempfile.mkdtemp(), "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    dist.barrier()
    from lmms_ac.models.process_group import release_gloo_group_at_exit
    release_gloo_group_at_exit()
    release_gloo_group_at_exit()  # a second model in the process: still one call
    print("initialised before exit:", dist.is_initialized(), flush=True)
    """
)


@pytest.mark.slow  # starts a Python process with torch
def test_gloo_group_is_destroyed_at_exit():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "initialised before exit: True" in out.stdout
    assert "initialised at the end: False" in out.stdout, out.stdout + out.stderr[-2000:]


def test_nothing_to_destroy_without_a_group():
    from lmms_ac.models.process_group import destroy_gloo_group

    assert destroy_gloo_group() is False

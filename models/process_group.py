"""Shut a CPU (gloo) data-parallel process group down while the interpreter is still alive.

lmms-eval never calls ``torch.distributed.destroy_process_group``. Under ``torchrun`` on CPU the gloo
group then outlives ``main``: its C++ worker threads still hold finished work objects whose tensors
refer to Python objects, and freeing them during interpreter finalisation needs the GIL, which is
gone. The process then aborts (``terminate called without an active exception``, SIGABRT) *after*
the results were written, torchrun kills its peers and exits 1 (pytorch/pytorch#179291 describes the
race; it hits a few runs in a hundred). Destroying the group at exit, before finalisation, is
PyTorch's documented shutdown. NCCL groups are left to lmms-eval as they are (not tested here).
"""

from __future__ import annotations

import atexit


def destroy_gloo_group() -> bool:
    """Destroy the default process group if it is an initialised gloo group; True when it did."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    if dist.get_backend() != "gloo":
        return False
    dist.destroy_process_group()
    return True


def release_gloo_group_at_exit() -> None:
    """Register :func:`destroy_gloo_group` to run at interpreter exit (once per process)."""
    atexit.unregister(destroy_gloo_group)  # idempotent: a second model in the same process adds no second call
    atexit.register(destroy_gloo_group)

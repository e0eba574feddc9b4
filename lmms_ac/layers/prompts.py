"""The text prompts of the layer-wise probes: given by the user, read from a file, the first questions of
an lmms-eval task, or the neutral set (``NEUTRAL_PROMPTS``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from lmms_ac.layers.extraction import NEUTRAL_PROMPTS


def read_prompts(texts: Optional[Sequence[str]], path: Optional[str]) -> List[str]:
    """Prompts from ``--prompt`` and ``--prompts-file``; the neutral set when neither is given."""
    import json

    prompts = list(texts or [])
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist")
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if file.suffix in (".jsonl", ".json"):
                rec = json.loads(line)
                value = next(
                    (rec[k] for k in ("question", "prompt", "text") if isinstance(rec, dict) and k in rec), None
                )
                if not isinstance(value, str):
                    raise ValueError(f"{path}:{n}: a record needs a string 'question', 'prompt' or 'text' field")
                prompts.append(value.replace("<image>", "").strip())
            else:
                prompts.append(line.strip())
    return prompts or list(NEUTRAL_PROMPTS)


def task_prompts(name: str, limit: int) -> List[str]:
    """The first ``limit`` questions (``doc_to_text``, image placeholders removed) of an lmms-eval task."""
    from lmms_ac.plugin import load_tasks, require_tasks, task_manager

    manager = task_manager(verbosity="INFO")  # our tasks and offline mirrors
    require_tasks(manager, [name])
    task = load_tasks([name], manager).get(name)
    if task is None or not hasattr(task, "doc_to_text"):
        raise ValueError(f"{name!r} is a group; pass one of its tasks")
    docs = task.eval_docs  # the test split, else the validation split
    if docs is None:
        raise ValueError(f"task {name!r} has no test or validation docs")
    prompts = []
    for i, doc in enumerate(docs):
        if i >= limit:
            break
        text = task.doc_to_text(doc)
        if isinstance(text, str) and text.replace("<image>", "").strip():
            prompts.append(text.replace("<image>", "").strip())
    if not prompts:
        raise ValueError(f"task {name!r} gave no text prompts")
    return prompts

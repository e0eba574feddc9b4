"""The text prompts of the layer-wise probes: given by the user, read from a file, the first questions of
an lmms-eval task, or the neutral set (``NEUTRAL_PROMPTS``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from lmms_ac.layers.extraction import NEUTRAL_PROMPTS


def read_prompts(texts: Optional[Sequence[str]], path: Optional[str]) -> List[str]:
    """Prompts from ``--prompt`` and ``--prompts-file``; the neutral set only when neither is given.

    A blank ``--prompt`` or a file that holds no prompt (empty, or only blank lines) is an error, never a
    silent fall-back to the neutral set. ``.jsonl`` holds one record per line; ``.json`` a list of records
    (or one per line); other files one prompt per line."""
    prompts = []
    for text in texts or []:
        if not text.replace("<image>", "").strip():
            raise ValueError(f"--prompt {text!r} is blank; give the question text, or leave --prompt out")
        prompts.append(text.replace("<image>", "").strip())
    if path:
        file_prompts = read_prompts_file(Path(path))
        if not file_prompts:
            raise ValueError(
                f"--prompts-file {path} holds no prompt (it is empty or only blank lines); write one prompt per "
                "line, or leave --prompts-file out for the neutral prompts"
            )
        prompts += file_prompts
    return prompts or list(NEUTRAL_PROMPTS)


def read_prompts_file(file: Path) -> List[str]:
    """The prompts of one file (see ``read_prompts``); damage is an error naming the file and line."""
    import json

    if not file.is_file():
        raise FileNotFoundError(f"--prompts-file {file} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    if file.suffix not in (".jsonl", ".json"):
        return [line.strip() for line in text.splitlines() if line.replace("<image>", "").strip()]
    records: List[tuple] = []
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{err.lineno}: not valid JSON ({err.msg}); the file may be cut short") from None
        records = [(f" record {i}", rec) for i, rec in enumerate(whole)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f":{n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}:{n}: not a JSON record ({err.msg}); write one JSON object per line") from None
    prompts = []
    for where, rec in records:
        value = next((rec[k] for k in ("question", "prompt", "text") if isinstance(rec, dict) and k in rec), None)
        if not isinstance(value, str):
            raise ValueError(f"{file}{where}: a record needs a string 'question', 'prompt' or 'text' field")
        if not value.replace("<image>", "").strip():
            raise ValueError(f"{file}{where}: the prompt is blank; give the question text or drop the record")
        prompts.append(value.replace("<image>", "").strip())
    return prompts


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

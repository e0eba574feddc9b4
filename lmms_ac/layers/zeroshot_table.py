"""Zero-shot recognition kept or lost: the MLLM's accuracy on the generated ``zeroshot_<set>`` tasks
(from lmms-eval result files) next to the encoders' CLIP-style accuracy (``zeroshot_enc:<set>`` rows of
the scores store), per set and averaged over the sets every column has, in percent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lmms_ac.layers.zeroshot import TAG

TASK_PREFIX = "zeroshot_"
ENC_PREFIX = "zeroshot_enc:"


def _model_name(model_args: str) -> str:
    """``variant=`` from lmms_ac_llava's model arguments, else ``pretrained=``, else the whole string."""
    args = dict(part.split("=", 1) for part in str(model_args).split(",") if "=" in part)
    return args.get("variant") or str(args.get("pretrained", model_args)).rstrip("/").split("/")[-1]


def mllm_accuracies(results_dir: str) -> Dict[str, Dict[str, float]]:
    """``{model: {set: acc %}}`` from lmms-eval ``*_results.json`` files (the newest file wins per model and set)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{results_dir} is not a directory of lmms-eval results")
    found: Dict[Tuple[str, str], Tuple[str, float]] = {}
    for path in sorted(root.rglob("*_results.json")):
        with open(path) as fh:
            doc = json.load(fh)
        model = _model_name((doc.get("config") or {}).get("model_args", ""))
        for task, metrics in (doc.get("results") or {}).items():
            if task.startswith(TASK_PREFIX) and task != TAG and "acc,none" in metrics:
                key = (model, task[len(TASK_PREFIX) :])
                stamp = path.name
                if key not in found or stamp >= found[key][0]:
                    found[key] = (stamp, 100.0 * float(metrics["acc,none"]))
    out: Dict[str, Dict[str, float]] = {}
    for (model, name), (_, acc) in found.items():
        out.setdefault(model, {})[name] = acc
    return out


def encoder_accuracies(scores_file: str) -> Dict[str, Dict[str, float]]:
    """``{encoder variant: {set: acc %}}`` from the scores store (the latest row per variant and set)."""
    from lmms_ac.scores.store import read_scores

    out: Dict[str, Dict[str, float]] = {}
    for row in read_scores(scores_file):
        if row["score"].startswith(ENC_PREFIX):
            out.setdefault(row["variant"], {})[row["score"][len(ENC_PREFIX) :]] = float(row["value"])
    return out


def zeroshot_table(results_dir: str, scores_file: Optional[str]) -> Dict[str, object]:
    """Columns (``MLLM: <model>`` and ``encoder: <variant>``), per-set values and the average over shared sets."""
    columns: Dict[str, Dict[str, float]] = {f"MLLM: {m}": v for m, v in sorted(mllm_accuracies(results_dir).items())}
    if scores_file:
        columns.update({f"encoder: {e}": v for e, v in sorted(encoder_accuracies(scores_file).items())})
    if not columns:
        raise ValueError(
            f"no zeroshot_* results under {results_dir}"
            + (f" and no zeroshot_enc:* rows in {scores_file}" if scores_file else "")
            + "; run the tasks from lmms-ac zeroshot-tasks (and lmms-ac zeroshot-encoder) first"
        )
    sets = sorted({s for values in columns.values() for s in values})
    shared = [s for s in sets if all(s in values for values in columns.values())]
    average = {c: (sum(v[s] for s in shared) / len(shared) if shared else float("nan")) for c, v in columns.items()}
    return {"columns": list(columns), "sets": sets, "values": columns, "shared_sets": shared, "average": average}


def format_table(table: Dict[str, object]) -> str:
    cols: List[str] = list(table["columns"])  # type: ignore[arg-type]
    values: Dict[str, Dict[str, float]] = table["values"]  # type: ignore[assignment]
    lines = ["set\t" + "\t".join(cols)]
    for s in table["sets"]:  # type: ignore[union-attr]
        lines.append(s + "\t" + "\t".join(f"{values[c][s]:.1f}" if s in values[c] else "-" for c in cols))
    shared = table["shared_sets"]
    lines.append(f"average ({len(shared)} shared sets)\t" + "\t".join(f"{table['average'][c]:.1f}" for c in cols))  # type: ignore[index]
    return "\n".join(lines)

"""lmms-eval results files -> one tidy results table (see ``lmms_ac.results.table``).

The layout read is the one lmms-eval 0.7 writes to ``<output>/<model>/<date>_results.json``:
``results`` {task: {"<metric>,<filter>": value, "<metric>_stderr,<filter>": stderr, "alias", "samples"}},
``groups`` (optional, same shape), ``configs`` {task: task config incl. ``metadata``}, ``n-samples``
{task: {original, effective}}, ``config`` {model, model_args, ...}, ``lmms_eval_version``, ``date``
(``%Y%m%d_%H%M%S``) and the tracker fields (``model_name``, ...). Samples files
(``<date>_samples_<task>.jsonl``) only supply ``n`` when a results file does not.

Rules:
- variant: ``variant=`` in model_args, else the basename of ``pretrained=`` (else of the tracker's
  ``model_name`` / config ``model``), then remapped through ``mapping`` (old -> new);
- perturbation metadata: ``configs[task].metadata.lmms_ac`` {base_task, perturbation, severity, seed}
  (``metadata`` may be a dict or a list of dicts); without it the row is clean (perturbation ``none``);
- one row per numeric metric; non-numeric values (e.g. ``submission``) are skipped with a debug log;
- reruns: rows with the same (variant, task, metric, perturbation, severity, seed) from several files
  -> the one with the newest ``date`` is kept (ties: the later path in sorted order) and every dropped
  row is logged and returned by ``collect``; a file with only some tasks contributes what it has.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from loguru import logger

from lmms_ac.io import config_hash
from lmms_ac.results.table import CLEAN, TABLE_COLUMNS, empty_table, validate_table

PathLike = Union[str, os.PathLike]
RESULTS_GLOB = "*results*.json"
SAMPLES_GLOB = "*samples*.jsonl"
STDERR_SUFFIXES = ("_stderr", "_stderr_clt", "_stderr_clustered")
KEY_COLUMNS = ["variant", "task", "metric", "perturbation", "severity", "seed"]


@dataclass
class Collected:
    table: pd.DataFrame
    dropped: pd.DataFrame  # rows superseded by a newer rerun (same columns + "kept_source")
    files: List[Path]


def find_files(paths: Iterable[PathLike]) -> Tuple[List[Path], List[Path]]:
    """Results JSONs and samples JSONLs among ``paths`` (directories are searched recursively)."""
    results, samples = [], []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            results += sorted(x for x in p.rglob(RESULTS_GLOB) if x.is_file())
            samples += sorted(x for x in p.rglob(SAMPLES_GLOB) if x.is_file())
        elif p.is_file():
            (samples if p.name.endswith(".jsonl") else results).append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist; pass lmms-eval results files or directories")
    return list(dict.fromkeys(results)), list(dict.fromkeys(samples))


def load_mapping(path: Optional[PathLike]) -> Dict[str, str]:
    """A variant-name mapping from a JSON object or a two-column CSV (old,new; header optional)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mapping file {path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"mapping file {path} must hold a JSON object {{old: new}}")
        return {str(k): str(v) for k, v in data.items()}
    df = pd.read_csv(path, header=None, dtype=str)
    if df.shape[1] != 2:
        raise ValueError(f"mapping file {path} must have exactly two columns (old,new), found {df.shape[1]}")
    first = [str(x).strip().lower() for x in df.iloc[0]]
    if first in (["old", "new"], ["from", "to"], ["source", "target"], ["old_name", "new_name"]):
        df = df.iloc[1:]
    mapping = {str(a).strip(): str(b).strip() for a, b in df.itertuples(index=False)}
    return mapping


def parse_model_args(model_args: Any) -> Dict[str, str]:
    """``"a=1,b=x"`` (or a dict) -> {"a": "1", "b": "x"}."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out = {}
    for part in str(model_args or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _basename(name: str) -> str:
    return name.rstrip("/\\").replace("\\", "/").split("/")[-1]


def variant_name(doc: Mapping[str, Any], mapping: Optional[Mapping[str, str]] = None, source: str = "") -> str:
    """The variant a results document belongs to (see module doc)."""
    config = doc.get("config") or {}
    args = parse_model_args(config.get("model_args"))
    if args.get("variant"):
        name = args["variant"]
    elif args.get("pretrained"):
        name = _basename(args["pretrained"])
    elif doc.get("model_name"):
        name = _basename(str(doc["model_name"]))
    elif config.get("model"):
        name = _basename(str(config["model"]))
    else:
        raise ValueError(
            f"{source}: cannot tell the variant: config.model_args has no variant= or pretrained= "
            f"(pass --model_args variant=NAME to lmms-eval, or fix the file)"
        )
    mapping = mapping or {}
    if name in mapping:
        return mapping[name]
    full = args.get("pretrained")
    if full and full in mapping:
        return mapping[full]
    return name


def lmms_ac_metadata(task_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``lmms_ac`` block of a task config's metadata (a list of blocks or one mapping), or {}."""
    meta = task_config.get("metadata") if isinstance(task_config, Mapping) else None
    items = meta if isinstance(meta, list) else [meta]
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("lmms_ac"), Mapping):
            return dict(item["lmms_ac"])
    return {}


LMMS_EVAL_TIMEZONE = "Asia/Singapore"
"""The zone of the ``date`` lmms-eval writes (its ``--timezone`` default), which carries no offset."""


def _run_time(doc: Mapping[str, Any], path: Path, zone: str = LMMS_EVAL_TIMEZONE) -> datetime:
    """When the run started, in UTC: lmms-eval's offset-less ``date`` (or the file name) read in ``zone``;
    the file's modification time where neither parses."""
    date = doc.get("date")
    candidates = [str(date)] if date else []
    candidates.append(path.name.split("_results")[0])
    for text in candidates:
        for fmt in (
            "%Y%m%d_%H%M%S",
            "%Y-%m-%dT%H-%M-%S.%f",
            "%Y-%m-%dT%H-%M-%S",
            "%Y-%m-%dT%H:%M:%S.%f",
            "%Y-%m-%dT%H:%M:%S",
        ):
            try:
                when = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return when.replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)
        try:
            return datetime.fromtimestamp(float(text), timezone.utc)
        except (TypeError, ValueError, OverflowError):
            pass
    logger.debug(f"{path}: no parseable date; using the file's modification time")
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def check_timezone(zone: str) -> str:
    """``zone`` if it names an IANA time zone, else an error with the fix."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone!r}; give the IANA name lmms-eval was run with (--timezone), e.g. "
            f"{LMMS_EVAL_TIMEZONE} (its default) or UTC"
        ) from None
    return zone


def _as_float(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _samples_n(samples: Sequence[Path], results_path: Path, task: str) -> Optional[int]:
    prefix = results_path.name.split("_results")[0]
    for s in samples:
        if s.parent == results_path.parent and s.name == f"{prefix}_samples_{task}.jsonl":
            return _count_lines(s)
    return None


def _model_arg_perturbation(config: Mapping[str, Any], task: str) -> Dict[str, Any]:
    """A perturbation given to lmms_ac_llava as a model argument (``perturbation=tokperm,perturbation_seed=3``)
    applies to every task of the run: the metadata a generated robustness task carries, from the same
    function (``robustness.grammar.perturbation_metadata``), so both routes share one
    (perturbation, severity) group."""
    args = parse_model_args(config.get("model_args"))
    if not args.get("perturbation"):
        return {}
    from lmms_ac.robustness.grammar import parse_perturbation, perturbation_metadata

    p = parse_perturbation(args["perturbation"])
    seed = int(args.get("perturbation_seed", p.seed) or 0)
    return perturbation_metadata(p, task, seed)


def rows_from_results(
    doc: Mapping[str, Any],
    path: Path,
    mapping: Optional[Mapping[str, str]] = None,
    samples: Sequence[Path] = (),
    zone: str = LMMS_EVAL_TIMEZONE,
) -> List[Dict[str, Any]]:
    """Tidy rows of one parsed results JSON; ``zone`` is the time zone lmms-eval wrote its ``date`` in."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("results"), Mapping):
        raise ValueError(
            f"{path} is not an lmms-eval results file (no 'results' object); pass the "
            f"<date>_results.json files lmms-eval writes under --output_path"
        )
    variant = variant_name(doc, mapping, str(path))
    when = _run_time(doc, path, zone)
    config = doc.get("config") or {}
    configs = doc.get("configs") or {}
    n_samples = doc.get("n-samples") or {}
    entries: Dict[str, Mapping[str, Any]] = dict(doc["results"])
    for g, v in (doc.get("groups") or {}).items():
        entries.setdefault(g, v)
    rows = []
    for task, metrics in entries.items():
        if not isinstance(metrics, Mapping):
            continue
        task_cfg = configs.get(task) or {}
        meta = lmms_ac_metadata(task_cfg) or _model_arg_perturbation(config, task)
        perturbation = str(meta.get("perturbation") or CLEAN)
        n = metrics.get("samples")
        if not isinstance(n, int):
            ns = n_samples.get(task)
            n = ns.get("effective") if isinstance(ns, Mapping) else None
        if not isinstance(n, int):
            n = _samples_n(samples, path, task)
        chash = config_hash(
            {
                "model": config.get("model"),
                "model_args": config.get("model_args"),
                "limit": config.get("limit"),
                "gen_kwargs": config.get("gen_kwargs"),
                "task_config": task_cfg,
            }
        )
        for key, value in metrics.items():
            if "," not in key:
                continue
            name, filt = key.split(",", 1)
            if name.endswith(STDERR_SUFFIXES):
                continue
            val = _as_float(value)
            if val is None:
                logger.debug(f"{path}: {task} {key} = {value!r} is not numeric; skipped")
                continue
            stderr = _as_float(metrics.get(f"{name}_stderr,{filt}"))
            seed = meta.get("seed")
            severity = meta.get("severity")
            rows.append(
                {
                    "variant": variant,
                    "task": task,
                    "metric": name if filt in ("none", "") else f"{name},{filt}",
                    "value": val,
                    "stderr": stderr,
                    "n": n,
                    "perturbation": perturbation,
                    "severity": "" if severity is None else str(severity),
                    "seed": None if seed is None or seed == "" else int(seed),
                    "base_task": str(meta.get("base_task") or task),
                    "lmms_eval_version": str(doc.get("lmms_eval_version") or ""),
                    "config_hash": chash,
                    "time": when.isoformat(timespec="seconds"),
                    "source": str(path),
                }
            )
    return rows


def dedupe_reruns(table: pd.DataFrame) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the newest row per (variant, task, metric, perturbation, severity, seed); return (kept, dropped)."""
    if table.empty:
        return table, table.assign(kept_source=pd.Series(dtype=str))
    t = table.assign(_order=range(len(table)))
    t = t.sort_values(["time", "source", "_order"], kind="stable")
    keys = t[KEY_COLUMNS].astype(str)
    last = ~keys.duplicated(keep="last")
    kept = t[last]
    dropped = t[~last]
    if not dropped.empty:
        kept_src = dict(zip(map(tuple, keys[last].to_numpy()), zip(kept["source"], kept["time"])))
        dk = keys[~last]
        winners = [kept_src[tuple(r)] for r in dk.to_numpy()]
        dropped = dropped.assign(kept_source=[w[0] for w in winners])
        for (_, row), (src, when) in zip(dropped.iterrows(), winners):
            logger.info(
                f"rerun: dropped {row['variant']} / {row['task']} / {row['metric']}"
                f"{'' if row['perturbation'] == CLEAN else ' / ' + row['perturbation']}"
                f" from {row['source']} ({row['time']}); kept {src} ({when})"
            )
    else:
        dropped = dropped.assign(kept_source=pd.Series(dtype=str))
    kept = kept.sort_values("_order").drop(columns="_order")
    return kept.reset_index(drop=True), dropped.drop(columns="_order").reset_index(drop=True)


def collect(
    paths: Iterable[PathLike],
    mapping: Union[None, PathLike, Mapping[str, str]] = None,
    zone: Optional[str] = None,
) -> Collected:
    """Read every results file under ``paths`` into one tidy table; see the module doc for the rules.
    Run times are stored in UTC with their offset; ``zone`` is lmms-eval's ``--timezone`` of those runs
    (default ``LMMS_EVAL_TIMEZONE``)."""
    zone = check_timezone(zone or LMMS_EVAL_TIMEZONE)
    paths = list(paths)
    if not paths:
        raise ValueError("no results given; pass lmms-eval results files or directories")
    if mapping is None or isinstance(mapping, Mapping):
        mapping_dict = dict(mapping or {})
    else:
        mapping_dict = load_mapping(mapping)
    results, samples = find_files(paths)
    if not results:
        raise ValueError(
            f"no lmms-eval results files ({RESULTS_GLOB}) found in {', '.join(map(str, paths))}; "
            f"pass the files lmms-eval wrote under --output_path"
        )
    rows: List[Dict[str, Any]] = []
    for path in results:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); remove it or fix it") from None
        got = rows_from_results(doc, path, mapping_dict, samples, zone)
        if not got:
            logger.warning(f"{path}: no numeric metrics found")
        rows += got
    if not rows:
        raise ValueError(f"the results files ({len(results)}) hold no numeric metrics")
    table = validate_table(pd.DataFrame(rows, columns=TABLE_COLUMNS))
    kept, dropped = dedupe_reruns(table)
    if len(dropped):
        logger.info(f"{len(dropped)} row(s) superseded by newer reruns were dropped")
    return Collected(validate_table(kept), dropped, results)


def collect_results(
    paths: Iterable[PathLike],
    mapping: Union[None, PathLike, Mapping[str, str]] = None,
    zone: Optional[str] = None,
) -> pd.DataFrame:
    """lmms-eval results files/directories -> the tidy table (``TABLE_COLUMNS``)."""
    return collect(paths, mapping, zone).table


__all__ = [
    "LMMS_EVAL_TIMEZONE",
    "check_timezone",
    "collect",
    "collect_results",
    "Collected",
    "dedupe_reruns",
    "find_files",
    "load_mapping",
    "rows_from_results",
    "variant_name",
    "empty_table",
]

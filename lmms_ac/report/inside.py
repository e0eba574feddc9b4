"""The report's "inside the model" section: what a trained MLLM keeps of its encoder, layer by layer,
and whether it keeps the encoder's zero-shot recognition.

Read from what the commands already stored, nothing recomputed: the scores store's per-layer rows of
``lmms-ac layers`` (``C@enc``, ``C@L<l>``, ``recon@L<l>``, ``attn_img@L<l>``, drawn with the command's
own ``plot_layer_curves``) and ``lmms-ac layers-knn`` (``knn@L<l>``, ``knn_base@L<l>``), the encoders'
``zeroshot_enc:<set>`` rows, and the MLLM's accuracy on the generated ``zeroshot_<set>`` tasks from
the tidy table. Definitions: docs/METHODS.md#layer-probes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Optional

import pandas as pd

import lmms_ac.report.figures as figures
from lmms_ac.report.sections import Section
from lmms_ac.layers.zeroshot_table import ENC_PREFIX, TASK_PREFIX
from lmms_ac.report.tables import Column, HtmlTable, num_cell, text_cell
from lmms_ac.scores.store import newest_rows

LAYER_SCORE = re.compile(r"^(C|recon|attn_img|knn|knn_base)@(enc|L\d+)$")


def latest_rows(scores: Optional[pd.DataFrame]) -> pd.DataFrame:
    """The newest store row per (variant, score) with a finite value."""
    if scores is None or scores.empty or not {"variant", "score", "value"} <= set(scores.columns):
        return pd.DataFrame(columns=["variant", "score", "value", "n", "details"])
    df = scores.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df = df[df["value"].map(lambda v: not (isinstance(v, float) and math.isnan(v)))]
    return newest_rows(df)


def layer_reports(rows: pd.DataFrame) -> Dict[str, Any]:
    """``{variant: LayerReport}`` rebuilt from the store's rows of ``lmms-ac layers``."""
    from lmms_ac.layers.pipeline import LayerReport

    out: Dict[str, Any] = {}
    if rows.empty:
        return out
    keep = [bool(LAYER_SCORE.match(s)) and not s.startswith("knn") for s in rows["score"].astype(str)]
    picked = rows[pd.Series(keep, index=rows.index, dtype=bool)]
    for variant, group in picked.groupby("variant", sort=True):
        by_score = {str(r["score"]): {k: ("" if pd.isna(v) else v) for k, v in r.items()} for _, r in group.iterrows()}
        layers = sorted({int(s.split("@L")[1]) for s in by_score if "@L" in s})
        if layers:
            details = _details(by_score)
            out[str(variant)] = LayerReport.from_rows(int(details.get("n_layers", max(layers))), layers, by_score)
    return out


def _details(rows: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    for row in rows.values():
        try:
            found = json.loads(row.get("details") or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(found, dict) and found:
            return found
    return {}


def knn_curves(rows: pd.DataFrame) -> Dict[str, Dict[str, Dict[int, float]]]:
    """``{variant: {"MLLM"|"base LLM": {layer: mutual k-NN}}}`` from ``knn@L``/``knn_base@L`` rows."""
    out: Dict[str, Dict[str, Dict[int, float]]] = {}
    for _, r in rows.iterrows():
        m = LAYER_SCORE.match(str(r["score"]))
        if m and m.group(1).startswith("knn") and m.group(2).startswith("L"):
            label = "MLLM" if m.group(1) == "knn" else "base LLM"
            out.setdefault(str(r["variant"]), {}).setdefault(label, {})[int(m.group(2)[1:])] = float(r["value"])
    return out


def zeroshot_frame(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per zero-shot set: the encoders' accuracy (%) and each MLLM's (%), side by side."""
    columns: Dict[str, Dict[str, float]] = {}
    enc = rows[rows["score"].astype(str).str.startswith(ENC_PREFIX).astype(bool)] if len(rows) else rows
    for _, r in enc.iterrows():
        columns.setdefault(f"encoder: {r['variant']}", {})[str(r["score"])[len(ENC_PREFIX) :]] = float(r["value"])
    if table is not None and not table.empty:
        zs = table[
            table["task"].astype(str).str.startswith(TASK_PREFIX)
            & (table["perturbation"] == "none")
            & (table["metric"] == "acc")
        ]
        for _, r in zs.iterrows():
            columns.setdefault(f"MLLM: {r['variant']}", {})[str(r["task"])[len(TASK_PREFIX) :]] = 100.0 * float(
                r["value"]
            )
    if not columns:
        return pd.DataFrame()
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "set"
    return frame[sorted(frame.columns, key=lambda c: (not c.startswith("MLLM"), c))]


def _zeroshot_table(frame: pd.DataFrame) -> HtmlTable:
    cols = [Column("set", "text")] + [Column(c, "num", "accuracy, %") for c in frame.columns]
    rows = [[text_cell(s)] + [num_cell(v, 1) for v in rec] for s, rec in zip(frame.index, frame.to_numpy())]
    return HtmlTable(cols, rows, id="zeroshot", caption="zero-shot accuracy (%): MLLM vs its encoder")


def inside_section(scores: Optional[pd.DataFrame], table: pd.DataFrame) -> Section:
    """The section as data (see ``report.sections.Section``); empty with the commands that fill it."""
    from lmms_ac.layers.plots import plot_knn_curves, plot_layer_curves

    sec = Section("inside", "Inside the model: what it keeps of its encoder, layer by layer")
    rows = latest_rows(scores)
    curves: List[Dict[str, Any]] = []
    for variant, rep in layer_reports(rows).items():
        try:
            svg = figures.via_plot(plot_layer_curves, rep, title=variant)
        except ValueError as err:
            sec.notes.append(f"{variant}: layer curves not drawn ({err})")
            continue
        curves.append({"variant": variant, "svg": svg, "caption": f"{variant} · C@L, reconstruction, attention"})
    for variant, lines in sorted(knn_curves(rows).items()):
        k = 10
        svg = figures.via_plot(plot_knn_curves, lines, k=k, title=f"{variant} · mutual k-NN with captions")
        curves.append({"variant": variant, "svg": svg, "caption": f"{variant} · image-caption alignment per layer"})
    zs = zeroshot_frame(rows, table)
    sec.data["curves"] = curves
    sec.data["zeroshot"] = _zeroshot_table(zs) if not zs.empty else None
    if zs.empty:
        sec.notes.append(
            "no zero-shot rows: `lmms-ac zeroshot-tasks`, evaluate the generated tasks with lmms-eval and collect "
            "them, and `lmms-ac zeroshot-encoder ... --out scores.csv` for the encoder's side"
        )
    if not curves and zs.empty:
        sec.empty = (
            "no layer probes in the scores file: run `lmms-ac layers --model CKPT --spair DIR --out scores.csv` "
            "(C@L, reconstruction, attention per layer) and `lmms-ac layers-knn ... --out scores.csv`, then rebuild "
            "the report with `--scores scores.csv`."
        )
    return sec

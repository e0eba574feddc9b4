"""Issue 9, item 2: `multiple_choice` and `loglikelihood` tasks run through the real lmms-eval CLI
with lmms_ac_llava, and the accuracy equals the one computed by hand from the same tiny model."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
CHOICES = ["Yes", "No", "Maybe", "Unknown"]  # > 2 choices: argmin and argmax disagree somewhere

TASKS = {
    "tiny_mme_mc.yaml": f"""
        task: tiny_mme_mc
        dataset_path: lmms-lab-encoder/MME
        test_split: test
        output_type: multiple_choice
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: {json.dumps(CHOICES)}
        doc_to_target: answer
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """,
    "tiny_mme_ll.yaml": """
        task: tiny_mme_ll
        dataset_path: lmms-lab-encoder/MME
        test_split: test
        output_type: loglikelihood
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: "{{question}}"
        doc_to_target: answer
        metric_list:
          - metric: perplexity
            aggregation: perplexity
            higher_is_better: false
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """,
}


def _write_tasks(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in TASKS.items():
        (root / name).write_text(textwrap.dedent(text))
    (root / "utils.py").write_text("def doc_to_visual(doc):\n    return [doc['image'].convert('RGB')]\n")
    return root


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, llava_hf_dir, mirror_dir):
    work = tmp_path_factory.mktemp("mc")
    tasks = _write_tasks(work / "tasks")
    out = work / "out"
    env = {**os.environ, "LMMS_AC_DATASETS": mirror_dir, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        str(BIN / "lmms-eval"),
        "--model",
        "lmms_ac_llava",
        "--model_args",
        f"pretrained={llava_hf_dir},device=cpu",
        "--tasks",
        "tiny_mme_mc,tiny_mme_ll",
        "--include_path",
        str(tasks),
        "--batch_size",
        "1",
        "--output_path",
        str(out),
        "--log_samples",
        "--verbosity",
        "INFO",
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    results = sorted(glob.glob(f"{out}/**/*_results.json", recursive=True))
    assert proc.returncode == 0 and results, log[-6000:]  # lmms-eval exits 0 on failure: the file is the tell
    samples = {}
    for path in glob.glob(f"{out}/**/*_samples_*.jsonl", recursive=True):
        task = path.rsplit("_samples_", 1)[1][: -len(".jsonl")]
        with open(path) as fh:
            samples[task] = {row["doc_id"]: row for row in map(json.loads, fh)}
    return {"results": json.load(open(results[-1]))["results"], "samples": samples, "log": log}


@pytest.fixture(scope="module")
def by_hand(llava_hf_dir, mirror_dir):
    """Sum log P(" choice" | prompt, image) for every doc and choice, from the library directly."""
    import datasets

    from lmms_ac.local_datasets import dataset_key
    from lmms_ac.testing.datasets import MME_PATH
    from lmms_ac.vlm.loaders import load_vlm
    from lmms_ac.vlm.prompts import build_prompt, resolve_format

    docs = datasets.load_from_disk(str(Path(mirror_dir) / dataset_key(MME_PATH)))["test"]
    vlm = load_vlm(llava_hf_dir, device="cpu")
    fmt = resolve_format("auto", vlm.tokenizer)  # what prompt_format=auto resolves to in the model
    lls = np.zeros((len(docs), len(CHOICES)))
    greedy = np.zeros((len(docs), len(CHOICES)), dtype=bool)
    for i, doc in enumerate(docs):
        prompt = build_prompt(doc["question"], 1, fmt, vlm.tokenizer)
        out = vlm.loglikelihood(
            [prompt] * len(CHOICES), [" " + c for c in CHOICES], [[doc["image"].convert("RGB")]] * len(CHOICES)
        )
        lls[i] = [ll for ll, _ in out]
        greedy[i] = [g for _, g in out]
    gold = np.array([CHOICES.index(d["answer"]) for d in docs])
    return {"lls": lls, "greedy": greedy, "gold": gold}


@pytest.mark.slow
def test_multiple_choice_accuracy_equals_the_hand_computed_one(cli_run, by_hand):
    lls, gold = by_hand["lls"], by_hand["gold"]
    assert (lls.argmax(1) != lls.argmin(1)).any()  # the test can tell a most-likely from a least-likely choice
    samples = cli_run["samples"]["tiny_mme_mc"]
    logged = np.array([[float(r[0]) for r in samples[i]["filtered_resps"]] for i in range(len(gold))])
    np.testing.assert_allclose(logged, lls, atol=2e-3)  # the CLI scored the same loglikelihoods
    per_doc = (lls.argmax(1) == gold).astype(float)
    assert [samples[i]["acc"] for i in range(len(gold))] == per_doc.tolist()
    res = cli_run["results"]["tiny_mme_mc"]
    assert res["acc,none"] == pytest.approx(per_doc.mean())
    expected_em = np.mean([by_hand["greedy"][i, g] for i, g in enumerate(gold)])
    assert res["exact_match,none"] == pytest.approx(expected_em)


@pytest.mark.slow
def test_loglikelihood_task_scores(cli_run, by_hand):
    gold = by_hand["gold"]
    gold_ll = by_hand["lls"][np.arange(len(gold)), gold]
    res = cli_run["results"]["tiny_mme_ll"]
    assert res["perplexity,none"] == pytest.approx(float(np.exp(-gold_ll.mean())), rel=1e-3)
    assert res["acc,none"] == pytest.approx(float(by_hand["greedy"][np.arange(len(gold)), gold].mean()))


def test_unwrap_keeps_loglikelihood_pairs_and_tells_logprobs_from_losses():
    import lmms_eval.models  # noqa: F401  (loads our entry point, which installs the hooks)
    from lmms_eval.api import instance

    from lmms_ac.plugin import _are_logprobs

    assert instance.unwrap_generation_output((-5.81, False)) == ((-5.81, False), None)
    assert instance.unwrap_generation_output("text") == ("text", None)
    assert instance.unwrap_generation_output(("text", {"output_tokens": 3}))[0] == "text"
    assert _are_logprobs([(-1.0, False), (-2.0, True)]) and _are_logprobs([[-1.0, False], [0.0, True]])
    assert not _are_logprobs([(1.2, False), (0.4, True)])  # losses (lmms-eval's own models): left alone
    assert not _are_logprobs([(0.0, True), (0.0, True)]) and not _are_logprobs(["a", 0.5]) and not _are_logprobs([])

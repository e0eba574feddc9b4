"""The perturbation grammar is torch-free: reading, printing and naming string forms, the generated task
names and metadata, and the results collector's metadata parsing never import torch (torch loads only
when a perturbation is applied)."""

import subprocess
import sys

import pytest

_PROGRAM = """
import sys
from lmms_ac.results import collect
from lmms_ac.robustness import generation, grammar, names

specs = generation.task_specs()
for spec in specs:
    form = spec.perturbation.to_string()
    p = grammar.parse_perturbation(form)
    assert p == spec.perturbation and p.to_string() == form, form
    grammar.perturbation_metadata(p, spec.base)
assert names.perturbation_for_task("mme_tokperm_s2").to_string() == "tokperm_s2"
assert specs and collect is not None
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


@pytest.mark.slow
def test_grammar_and_collect_do_not_import_torch():
    done = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]


def test_applying_a_parsed_perturbation_still_works():
    import torch

    from lmms_ac.robustness.grammar import parse_perturbation

    p = parse_perturbation("patchshuffle2_s1")
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4) / 48
    out = p(x, p.context("mme", 0, (2, 2), 2))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(torch.sort(out.flatten()).values, torch.sort(x.flatten()).values)

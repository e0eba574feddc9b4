"""lmms-ac doctor: the known-bad table, the failing exit code, and the check at model load."""

from __future__ import annotations

import pytest

from lmms_ac import doctor
from lmms_ac.cli import main


def _versions(**have):
    return lambda package: have.get(package)


def test_known_bad_filelock_4_is_named_with_its_fix():
    found = doctor.known_bad_findings(_versions(filelock="4.3.1", **{"lmms-eval": "0.7.3"}))
    assert len(found) == 1
    assert found[0].status == doctor.FAIL
    assert "filelock 4.3.1" in found[0].message and "filelock._api" in found[0].message
    assert found[0].fix == "pip install 'filelock<4'"


@pytest.mark.parametrize(
    "filelock,lmms_eval,n_bad",
    [("3.20.0", "0.7.3", 0), ("4.0.0", "0.7.3", 1), ("3.20.0", "0.8.0", 1), ("4.0.0", "0.7.2", 2)],
)
def test_known_bad_ranges(filelock, lmms_eval, n_bad):
    assert len(doctor.known_bad_findings(_versions(filelock=filelock, **{"lmms-eval": lmms_eval}))) == n_bad


def test_absent_package_is_not_reported():
    assert doctor.known_bad_findings(_versions()) == []


def test_doctor_exits_nonzero_and_names_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "installed_version", _versions(filelock="4.3.1", **{"lmms-eval": "0.7.3"}))
    assert main(["doctor", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] known-bad versions: filelock 4.3.1" in out and "-> fix: pip install 'filelock<4'" in out
    assert "1 problem(s) found" in out


def test_doctor_passes_in_the_tested_environment(capsys):
    assert main(["doctor", "--quick"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_model_load_fails_with_the_doctor_message(monkeypatch):
    monkeypatch.setattr(doctor, "installed_version", _versions(filelock="4.3.1", **{"lmms-eval": "0.7.3"}))
    with pytest.raises(doctor.EnvironmentBroken, match=r"filelock 4\.3\.1.*\n    fix: pip install 'filelock<4'"):
        doctor.require_runtime()
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    with pytest.raises(doctor.EnvironmentBroken, match="lmms-ac doctor"):
        LmmsAcLlava(pretrained="/nonexistent")


def test_missing_mirror_directory_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("LMMS_AC_DATASETS", str(tmp_path / "nope"))
    (finding,) = doctor.CHECKS.get("dataset mirrors").run()
    assert finding.status == doctor.FAIL and "not a directory" in finding.message


def test_an_entry_point_that_no_longer_loads_says_reinstall(monkeypatch):
    """An editable install made before the entry point moved (lmms_ac.plugin:get_manifests) still lists it."""
    from importlib import metadata

    stale = metadata.EntryPoint("lmms_ac", "lmms_ac.plugin:get_manifests", "lmms_eval.models")
    current = metadata.EntryPoint("lmms_ac", "lmms_ac.entry_point:get_manifests", "lmms_eval.models")
    monkeypatch.setattr(doctor.metadata, "entry_points", lambda group: [stale])
    (found,) = doctor.CHECKS.get("plugin entry point").run()
    assert found.status == doctor.FAIL and "does not load" in found.message and "reinstall" in found.fix
    monkeypatch.setattr(doctor.metadata, "entry_points", lambda group: [current])
    (found,) = doctor.CHECKS.get("plugin entry point").run()
    assert found.status == doctor.OK


def test_sentencepiece_0_2_3_with_protobuf_6_is_a_known_bad_row():
    (found,) = doctor.known_bad_findings(_versions(sentencepiece="0.2.3", protobuf="6.33.6"))
    assert "sentencepiece 0.2.3 (>=0.2.3) with protobuf 6.33.6" in found.message
    assert "protobuf>=7.36.1" in found.message and "tokenizer.model" in found.message
    assert found.fix == doctor.SENTENCEPIECE_FIX and "sentencepiece>=0.2.1,<0.2.3" in found.fix
    assert doctor.known_bad_findings(_versions(sentencepiece="0.2.2", protobuf="6.33.6")) == []
    # the pair that works (a wandb that allows protobuf 7) is not reported
    assert doctor.known_bad_findings(_versions(sentencepiece="0.2.3", protobuf="7.36.2")) == []


def test_a_broken_lmms_eval_import_is_reported_as_it_is_not_blamed_on_filelock(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "lmms_eval.evaluator":
            raise ImportError("cannot import name 'Collator' from 'lmms_eval.utils'")
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    (found,) = doctor.CHECKS.get("lmms-eval").run()
    assert found.status == doctor.FAIL
    assert "lmms_eval.evaluator (ImportError: cannot import name 'Collator'" in found.message
    assert "filelock" not in found.message + found.fix and "pip install -c constraints.txt -e ." in found.fix


def test_a_missing_filelock_api_still_names_filelock(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "filelock._api" else real(n, *a))
    (found,) = doctor.CHECKS.get("lmms-eval").run()
    assert "filelock._api (not found)" in found.message and found.fix.startswith("pip install 'filelock<4'")


def test_the_full_doctor_imports_the_evaluator_and_reports_the_real_error(monkeypatch):
    import importlib

    def fail(name, *args):
        raise AttributeError("module 'numpy' has no attribute 'float'")

    monkeypatch.setattr(importlib, "import_module", fail)
    (found,) = doctor.CHECKS.get("lmms-eval evaluator import").run()
    assert found.status == doctor.FAIL and "AttributeError: module 'numpy' has no attribute 'float'" in found.message


def test_quick_says_what_it_skipped(capsys):
    assert main(["doctor", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "[info] quick: skipped" in out
    for name in ("torch", "tasks visible to lmms-eval", "sentencepiece tokenizer", "lmms-eval evaluator import"):
        assert name in out.split("[info] quick: skipped", 1)[1]
    assert "[  ok] sentencepiece: sentencepiece 0.2.2" in out


def test_sentencepiece_checks_name_the_fix(monkeypatch):
    (ok,) = doctor.CHECKS.get("sentencepiece tokenizer").run()  # trains and loads a real tokenizer.model
    assert ok.status == doctor.OK, ok.message
    import transformers

    def misread(*args, **kwargs):
        raise ValueError("Error parsing line b'\\x0e' in /tmp/x/tokenizer.model")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", misread)
    (found,) = doctor.CHECKS.get("sentencepiece tokenizer").run()
    assert found.status == doctor.FAIL and "Error parsing line" in found.message
    assert found.fix == doctor.SENTENCEPIECE_FIX
    monkeypatch.setitem(__import__("sys").modules, "sentencepiece", None)
    (found,) = doctor.CHECKS.get("sentencepiece").run()
    assert found.status == doctor.FAIL and "cannot be read" in found.message and found.fix == doctor.SENTENCEPIECE_FIX

"""Model arguments: strict booleans in one helper, remote code stays off, --batch_size and batch_size=N
both work, bad values are errors naming the argument."""

from __future__ import annotations

import json
import shutil
from typing import Annotated, Optional

import pytest

from lmms_ac.model_args import (
    AtLeast,
    convert,
    merge_arguments,
    parse_bool,
    parse_int,
    split_arg_string,
    typed_arguments,
)


@pytest.mark.parametrize(
    "word,value",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (" OFF ", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_booleans_parse_strictly(word, value):
    assert parse_bool(word, "flag") is value


@pytest.mark.parametrize("bad", ["maybe", "", "2", "y", "enabled", 2, None, 1.5, [True]])
def test_anything_else_is_an_error_naming_the_argument(bad):
    with pytest.raises(
        ValueError, match="trust_remote_code=.* is not a boolean; write one of true/1/yes/on or false/0/no/off"
    ):
        parse_bool(bad, "trust_remote_code")


def test_integers_and_optionals():
    assert parse_int("8", "batch_size", minimum=1) == 8 and parse_int(8.0, "n") == 8
    for bad in ("auto", "2.5", True, None):
        with pytest.raises(ValueError, match="batch_size=.* is not an integer"):
            parse_int(bad, "batch_size")
    with pytest.raises(ValueError, match="must be >= 1"):
        parse_int("0", "batch_size", minimum=1)
    assert convert("none", Optional[int], "x") is None and convert("3", Optional[int], "x") == 3
    assert convert(7, str, "variant") == "7" and convert("007", str, "variant") == "007"


def test_typed_arguments_convert_by_annotation():
    class Model:
        @typed_arguments
        def __init__(self, name: str = "m", flag: bool = False, n: int = 1, limit: Optional[int] = None, **rest):
            self.args = (name, flag, n, limit, rest)

    assert Model(name="0012", flag="off", n="4", limit="", other="x").args == ("0012", False, 4, None, {"other": "x"})
    assert Model(flag="on").args[1] is True
    with pytest.raises(ValueError, match="flag='perhaps' is not a boolean"):
        Model(flag="perhaps")


def test_impossible_numbers_are_refused_by_annotation():
    class Model:
        @typed_arguments
        def __init__(self, n: Annotated[int, AtLeast(1)] = 1, cap: Optional[Annotated[int, AtLeast(0)]] = None):
            self.args = (n, cap)

    assert Model(n="3", cap="0").args == (3, 0) and Model(cap="none").args == (1, None)
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0; give n=1 or more"):
        Model(n="0")
    with pytest.raises(ValueError, match=r"cap must be >= 0, got -2"):
        Model(cap=-2)
    with pytest.raises(ValueError, match=r"n='x' is not an integer"):
        Model(n="x")


@pytest.mark.parametrize(
    "arg,message",
    [
        ("max_new_tokens=0", r"max_new_tokens must be >= 1, got 0; give max_new_tokens=1 or more"),
        ("max_new_tokens=-1", r"max_new_tokens must be >= 1, got -1"),
        ("batch_size=0", r"batch_size must be >= 1, got 0"),
        ("prefix_cache_size=0", r"prefix_cache_size must be >= 1, got 0"),
        ("prompt_format=vicuna", r"unknown prompt_format 'vicuna'; choose one of auto, "),
    ],
)
def test_impossible_model_arguments_fail_before_the_checkpoint_loads(tmp_path, arg, message):
    """The checkpoint does not exist: the argument's error comes first, so no load is wasted on it."""
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    with pytest.raises(ValueError, match=message):
        LmmsAcLlava.create_from_arg_string(f"pretrained={tmp_path / 'missing'},device=cpu,{arg}", {"batch_size": 1})


def test_arg_string_split_keeps_strings():
    assert split_arg_string(
        'pretrained=a/b,trust_remote_code=off,variant=007,system_prompt=\'x, y\',j={"a":1,"b":2}'
    ) == {
        "pretrained": "a/b",
        "trust_remote_code": "off",
        "variant": "007",
        "system_prompt": "'x, y'",
        "j": '{"a":1,"b":2}',
    }
    assert split_arg_string("") == {} and split_arg_string({"batch_size": 2}) == {"batch_size": 2}
    with pytest.raises(ValueError, match="'dtype' is not key=value"):
        split_arg_string("pretrained=x,dtype")
    with pytest.raises(ValueError, match="'batch_size' is given twice"):
        split_arg_string("batch_size=1,batch_size=2")


def test_batch_size_from_model_args_or_command_line():
    cli_default = {
        "batch_size": 1,
        "max_batch_size": None,
        "device": None,
    }  # what lmms-eval passes without --batch_size
    assert merge_arguments({"batch_size": "8"}, cli_default) == {"batch_size": "8"}
    assert merge_arguments({}, {"batch_size": "8", "device": None}) == {"batch_size": "8"}
    assert merge_arguments({"batch_size": "8"}, {"batch_size": "8"}) == {"batch_size": "8"}
    with pytest.raises(
        ValueError, match="batch_size is given twice with different values: '8' in --model_args and '4'"
    ):
        merge_arguments({"batch_size": "8"}, {"batch_size": "4"})
    with pytest.raises(ValueError, match="device is given twice"):
        merge_arguments({"device": "cpu"}, {"device": "cuda:0"})


def test_lmms_eval_entry_point_takes_batch_size_as_model_argument(llava_hf_dir):
    """lmms-eval calls create_from_arg_string(model_args, {batch_size, max_batch_size, device}); with
    batch_size in both it used to fail with "got multiple values for keyword argument"."""
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    lm = LmmsAcLlava.create_from_arg_string(
        f"pretrained={llava_hf_dir},batch_size=3,device=cpu,trust_remote_code=no",
        {"batch_size": 1, "max_batch_size": None, "device": None},
    )
    assert lm.batch_size == 3
    lm = LmmsAcLlava.create_from_arg_string(
        f"pretrained={llava_hf_dir}", {"batch_size": "2", "max_batch_size": None, "device": "cpu"}
    )
    assert lm.batch_size == 2
    with pytest.raises(ValueError, match="trust_remote_code='maybe' is not a boolean"):
        LmmsAcLlava.create_from_arg_string(
            f"pretrained={llava_hf_dir},device=cpu,trust_remote_code=maybe", {"batch_size": 1}
        )
    with pytest.raises(ValueError, match="batch_size='auto' is not an integer"):
        LmmsAcLlava.create_from_arg_string(f"pretrained={llava_hf_dir},device=cpu", {"batch_size": "auto"})
    # max_batch_size bounds lmms-eval's automatic batch size, which this model does not do: refused, not ignored
    with pytest.raises(ValueError, match=r"max_batch_size=16 is not supported.*--batch_size N"):
        LmmsAcLlava.create_from_arg_string(
            f"pretrained={llava_hf_dir},device=cpu", {"batch_size": 1, "max_batch_size": 16}
        )


EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("executed")
from transformers import PreTrainedTokenizerFast


class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture()
def remote_code_checkpoint(original_dirs, tmp_path, monkeypatch):
    """The tiny original checkpoint whose tokenizer_config.json maps AutoTokenizer to a module in the
    checkpoint that writes a marker file when imported."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))  # keep the user's cache clean
    ckpt = tmp_path / "llava-remote-code"
    shutil.copytree(original_dirs["full"]["checkpoint"], ckpt)
    marker = tmp_path / "remote_code_ran"
    (ckpt / "evil_tokenizer.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    config_path = ckpt / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil_tokenizer.EvilTokenizer"]}
    config_path.write_text(json.dumps(config))
    return ckpt, marker


def test_remote_code_runs_only_when_trusted(remote_code_checkpoint):
    from transformers import AutoTokenizer

    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    ckpt, marker = remote_code_checkpoint
    for word in ("off", "false", "0", "no"):
        lm = LmmsAcLlava.create_from_arg_string(
            f"pretrained={ckpt},trust_remote_code={word},device=cpu", {"batch_size": 1}
        )
        assert lm.tokenizer is not None
        assert not marker.exists(), f"trust_remote_code={word} executed the checkpoint's code"
    # the checkpoint really does run code when trusted, so the assertions above can fail
    AutoTokenizer.from_pretrained(str(ckpt), trust_remote_code=True)
    assert marker.read_text() == "executed"

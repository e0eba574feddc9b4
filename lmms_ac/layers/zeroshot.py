"""Zero-shot recognition kept or lost (seed 002, section 3.6; docs/METHODS.md#zero-shot-kept-or-lost).

MLLM side: ``prepare_task`` turns an image classification set (an image folder with one
sub-folder per class, a ``datasets.save_to_disk`` copy, or a hub dataset id) into a seeded subset
(1000 images by default) saved next to a generated lmms-eval task: ``multiple_choice`` over the class
names, answered by the loglikelihood of each class name after the question, ``acc`` = the class with
the HIGHEST loglikelihood (our own ``process_results``: lmms-eval's built-in multiple_choice scoring
takes the argmin, which assumes a loss, while lmms_ac_llava returns log-probabilities). Run with
``lmms-eval --include_path DIR --tasks zeroshot_<name>``.

Encoder side: ``encoder_zero_shot`` is CLIP-style zero-shot of an encoder that has a text tower
(CLIP, SigLIP... through transformers' ``get_image_features`` / ``get_text_features``): image
embedding vs the mean of the normalised text embeddings of each class's prompt templates.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

DEFAULT_PROMPT = "What is the main object or scene in this image? Answer with its class name."
DEFAULT_TEMPLATES = ("a photo of a {}.",)
TAG = "lmms_ac_zeroshot"
# the paper's seven sets (1K samples each). Suggested sources: hub copies expected to hold an image
# column and a ClassLabel column (``prepare_task`` checks the schema and says which columns it found or
# lacks; override with NAME=<hub id | image folder | save_to_disk dir>[@split]). Country211 has no such
# hub copy: OpenAI's country211.tgz unpacks to an image folder, pass country211=<dir>/country211/test.
PAPER_SETS: Dict[str, Optional[str]] = {
    "caltech101": "Donghyun99/Caltech-101@test",
    "cifar100": "uoft-cs/cifar100@test",
    "food101": "ethz/food101@validation",
    "pets": "timm/oxford-iiit-pet@test",
    "country211": None,
    "eurosat": "timm/eurosat-rgb@test",
    "aircraft": "HuggingFaceM4/FGVC-Aircraft@test",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: a hub repository id: "name" or "org/name", letters, digits, '.', '_' and '-' (not starting with '.' or '-')
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def local_or_hub(text: str, what: str) -> str:
    """``text`` as a local path when it exists, else as a hub id when it has a hub id's form (``name`` or
    ``org/name``: no leading '/', '.', '~', at most one '/'); anything else is a missing path, an error naming
    it. So ``data/cifar/test`` or ``./cifar`` that does not exist never turns into a hub download."""
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if HUB_ID.match(text):
        return text
    raise FileNotFoundError(
        f"{what} {text!r} does not exist; give an existing folder, or a hub id of the form 'name' or 'org/name'"
    )


# ----------------------------------------------------------------------------- data
def parse_source(text: str) -> Tuple[str, str, Optional[str]]:
    """``NAME=SOURCE[@split]`` or a paper set name -> (name, source, split)."""
    if "=" not in text:
        if text not in PAPER_SETS:
            import difflib

            close = difflib.get_close_matches(text, list(PAPER_SETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown dataset {text!r}{hint}; give NAME=SOURCE[@split] or one of {', '.join(PAPER_SETS)}"
            )
        name, rest = text, PAPER_SETS[text]
        if rest is None:
            raise ValueError(
                f"{text} has no hub copy with class labels; give {text}=<image folder>, e.g. the "
                "test/ folder of OpenAI's country211.tgz"
            )
    else:
        name, rest = text.split("=", 1)
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r} must be lower-case letters, digits and '_' (it becomes the task name)")
    source, _, split = rest.partition("@")
    return name, source, split or None


def load_source(source: str, split: Optional[str] = None):
    """A ``datasets.Dataset`` from an image folder, a save_to_disk copy or a hub id."""
    import datasets

    path = Path(local_or_hub(source, "dataset source"))
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset("imagefolder", data_dir=str(path))
    elif path.exists():
        raise ValueError(f"dataset source {source} is a file; give an image folder, a save_to_disk copy or a hub id")
    else:
        data = datasets.load_dataset(source, split=split) if split else datasets.load_dataset(source)
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            if len(data) != 1:
                raise ValueError(f"{source} has splits {list(data)}; pick one with @split")
            split = next(iter(data))
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; it has {list(data)}")
        data = data[split]
    return data


def find_columns(
    features: Any, image_column: Optional[str] = None, label_column: Optional[str] = None
) -> Tuple[str, str]:
    """The image column (a ``datasets.Image`` feature) and the label column (a ``ClassLabel``)."""
    import datasets

    def pick(given, kind, names):
        if given:
            if given not in features:
                raise ValueError(f"no column {given!r}; columns are {list(features)}")
            return given
        if len(names) != 1:
            raise ValueError(
                f"cannot tell the {kind} column (candidates {names or 'none'} among {list(features)}); "
                f"pass --{kind}-column"
            )
        return names[0]

    images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    labels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
    return pick(image_column, "image", images), pick(label_column, "label", labels)


def class_prompt_name(name: str) -> str:
    """``golden_retriever`` -> ``golden retriever``; ``001.ak47`` style prefixes are kept as they are."""
    return re.sub(r"[_]+", " ", str(name)).strip()


def subsample(n_total: int, n: int, seed: int) -> List[int]:
    """``n`` seeded indices in increasing order (all of them when the set is smaller)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_total, n, replace=False))


def prepare_task(
    name: str,
    source: str,
    to: str,
    *,
    split: Optional[str] = None,
    n: int = 1000,
    seed: int = 0,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    prompt: str = DEFAULT_PROMPT,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Save the seeded subset as ``to/<name>/`` (columns ``image``, ``label``) and write
    ``to/zeroshot_<name>.yaml``; returns a summary (paths, classes, n)."""
    import datasets

    from lmms_ac.io import OutputExistsError, atomic_write_text, check_replaceable

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    root = Path(to)
    data_dir, yaml_path = root / name, root / f"zeroshot_{name}.yaml"
    if not overwrite and (data_dir.exists() or yaml_path.exists()):
        raise OutputExistsError(f"{yaml_path} or {data_dir} already exists; pass --overwrite to regenerate")
    # --overwrite replaces only a set this command saved there (datasets' save_to_disk writes dataset_dict.json)
    check_replaceable(data_dir, ["dataset_dict.json"], "a zero-shot set saved by zeroshot-tasks", overwrite=overwrite)
    data = load_source(source, split)
    image_col, label_col = find_columns(data.features, image_column, label_column)
    names = list(classes) if classes else [class_prompt_name(c) for c in data.features[label_col].names]
    if len(names) != data.features[label_col].num_classes:
        raise ValueError(
            f"{len(names)} class names given but {source} has {data.features[label_col].num_classes} classes"
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"class names are not unique after formatting: {sorted(x for x in names if names.count(x) > 1)[:5]}"
        )
    idx = subsample(len(data), n, seed)
    data = data.select(idx).select_columns([image_col, label_col])
    data = data.rename_columns({c: t for c, t in ((image_col, "image"), (label_col, "label")) if c != t})
    data = data.cast_column("label", datasets.ClassLabel(names=names))
    data = data.add_column("source_index", idx)
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    datasets.DatasetDict({"test": data}).save_to_disk(str(data_dir))
    atomic_write_text(
        yaml_path, task_yaml(name, data_dir.resolve(), names, prompt, source, split, n, seed), overwrite=True
    )
    return {
        "task": f"zeroshot_{name}",
        "yaml": str(yaml_path),
        "data": str(data_dir),
        "n": len(data),
        "classes": len(names),
        "source": source,
        "split": split,
    }


class FunctionRef(str):
    """A ``!function module.name`` value of a generated lmms-eval task YAML."""


class TaskYamlDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that also writes ``FunctionRef`` as lmms-eval's ``!function`` tag."""


TaskYamlDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def task_yaml(
    name: str, data_dir: Path, classes: Sequence[str], prompt: str, source: str, split: Optional[str], n: int, seed: int
) -> str:
    """The lmms-eval task, written by the YAML library: source paths, prompts and class names are user text
    (a newline in any of them stays inside its value and can never add a key)."""
    meta = {
        "version": 1,
        "source": source,
        "source_split": split,
        "n": n,
        "seed": seed,
        "generator": "lmms-ac zeroshot-tasks",
    }
    task = {
        "task": f"zeroshot_{name}",
        "tag": TAG,
        "dataset_path": str(data_dir),
        "dataset_kwargs": {"load_from_disk": True},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_visual": FunctionRef("lmms_ac.layers.zeroshot.doc_to_visual"),
        "doc_to_text": prompt,
        "doc_to_target": "label",
        "doc_to_choice": list(classes),
        "target_delimiter": " ",
        "process_results": FunctionRef("lmms_ac.layers.zeroshot.process_results"),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": meta,  # lmms-eval merges metadata into each request: no key named split
    }
    header = (
        "# Zero-shot classification generated by lmms-ac zeroshot-tasks (source, split, n and seed: see metadata).\n"
        "# acc: the class name with the highest loglikelihood after the question is the answer.\n"
    )
    return header + yaml.dump(task, Dumper=TaskYamlDumper, sort_keys=False, allow_unicode=True, width=1000)


# ----------------------------------------------------------------------------- task functions
def doc_to_visual(doc: Dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def process_results(doc: Dict[str, Any], results: Sequence[Tuple[float, bool]]) -> Dict[str, float]:
    """``results`` are (loglikelihood, is_greedy) per class, in class order; the answer is the argmax."""
    lls = np.array([float(r[0]) for r in results])
    return {"acc": float(int(np.argmax(lls)) == int(doc["label"]))}


# ----------------------------------------------------------------------------- encoder side
def encoder_model_id(name: str) -> str:
    """A hub id or existing directory, given as such or in a representation spec
    (``clip:openai/clip-vit-large-patch14?layer=-2``); a missing path is an error (see ``local_or_hub``)."""
    if Path(name).expanduser().exists() or ":" not in name:
        return local_or_hub(name, "encoder")
    from lmms_ac.vision import FAMILIES
    from lmms_ac.vision.spec import parse_spec

    return local_or_hub(parse_spec(name, set(FAMILIES.names())).target, "encoder")


def load_text_image_model(name: str, device: Any = "cpu"):
    """(model, tokenizer, image processor) of a dual encoder; a clear error when there is no text tower."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model_id = encoder_model_id(name)
    model = AutoModel.from_pretrained(model_id).to(device).eval()
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ValueError(
            f"{name} ({type(model).__name__}) has no text tower: CLIP-style zero-shot needs a dual encoder "
            "such as CLIP or SigLIP (DINOv2 and diffusion models have none)"
        )
    return model, AutoTokenizer.from_pretrained(model_id), AutoImageProcessor.from_pretrained(model_id)


def _features(output: Any):
    return output if hasattr(output, "norm") else getattr(output, "pooler_output", output[0])


def encoder_zero_shot(
    model,
    tokenizer,
    image_processor,
    images: Sequence[Any],
    labels: Sequence[int],
    classes: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    progress: bool = True,
) -> Dict[str, Any]:
    """Top-1 accuracy (percent) of CLIP-style zero-shot; ``images`` are PIL images, ``labels`` class indices."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if not templates or any("{}" not in t for t in templates):
        raise ValueError("every template needs a '{}' where the class name goes, e.g. 'a photo of a {}.'")
    device = next(model.parameters()).device
    padding = "max_length" if "siglip" in type(model).__name__.lower() else True
    with torch.inference_mode():
        text = []
        for name in classes:
            tok = tokenizer(
                [t.format(name) for t in templates], padding=padding, truncation=True, return_tensors="pt"
            ).to(device)
            emb = F.normalize(_features(model.get_text_features(**tok)).float(), dim=-1).mean(0)
            text.append(F.normalize(emb, dim=-1))
        text_emb = torch.stack(text)
        preds = []
        for start in tqdm(range(0, len(images), batch_size), desc="encoder zero-shot", disable=not progress):
            chunk = [im.convert("RGB") for im in images[start : start + batch_size]]
            px = image_processor(images=chunk, return_tensors="pt")["pixel_values"].to(
                device, next(model.parameters()).dtype
            )
            img = F.normalize(_features(model.get_image_features(pixel_values=px)).float(), dim=-1)
            preds.extend((img @ text_emb.T).argmax(-1).tolist())
    correct = [int(p == int(y)) for p, y in zip(preds, labels)]
    return {"accuracy": 100.0 * float(np.mean(correct)), "n": len(correct), "predictions": preds}

"""Issue 20, weak cases in the readers, layers and figures: user text in figures is never mathtext, a
table without clean rows still gives a report, prompts files and zero-shot sources are checked, the A
score names a damaged caption file and refuses --n 0."""

from __future__ import annotations

from pathlib import Path

import pytest

MATH = r"$\undefinedmacro$"


# ------------------------------------------------------------------ figures: user text is drawn as typed
def test_law_figures_draw_a_mathtext_looking_variant_as_typed(tmp_path):
    from lmms_ac.law.data import load_example
    from lmms_ac.law.fit import fit_law
    from lmms_ac.law.plots import plot_law_surface, plot_patch_info_loss, plot_pred_vs_actual

    fit = fit_law(load_example(benchmarks=["mme"]), normalize="minmax", random_draws=3).benchmarks["mme"]
    fit.predictions["setting"] = [MATH] + list(fit.predictions["setting"])[1:]
    fit.benchmark = MATH
    paths = plot_law_surface(fit, tmp_path / "surface")
    assert MATH in paths[1].read_text(encoding="utf-8").replace("&#36;", "$")
    plot_pred_vs_actual([fit], tmp_path / "pva", formats=["png"])  # tight_layout measures the titles
    plot_patch_info_loss([[0.1, 0.2], [0.3, 0.4]], tmp_path / "pil", title=MATH, formats=["png"])


def test_save_figure_draws_user_text_of_figures_built_elsewhere_as_typed(tmp_path):
    """study report's drop bars build their figure outside plain_text and write it with save_figure."""
    from lmms_ac.law.plots import new_figure, save_figure

    fig = new_figure(3, 2)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar([0], [1.0], label=MATH)
    ax.set_xticks([0])
    ax.set_xticklabels([MATH])
    ax.legend()
    assert all(p.stat().st_size > 0 for p in save_figure(fig, tmp_path / "bars"))


def test_layer_figures_and_report_heat_map_draw_user_text_as_typed(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from lmms_ac.layers.plots import plot_knn_curves, plot_layer_curves
    from lmms_ac.report.figures import robustness_heatmap

    layers = SimpleNamespace(
        c={0: 10.0, 1: 8.0}, c_encoder=12.0, c_chance=1.0, recon={}, attn_img={}, attn_uniform=float("nan")
    )
    plot_layer_curves(layers, tmp_path / "layers", title=MATH, formats=["png"])
    plot_knn_curves({MATH: {0: 0.1, 1: 0.2}}, tmp_path / "knn", k=10, title=MATH, formats=["png"])
    svg = robustness_heatmap(np.ones((1, 1)), np.full((1, 1), np.nan), [MATH], [MATH], MATH, 1.0)
    assert "undefinedmacro" in svg


def test_report_with_a_mathtext_variant_and_only_perturbed_rows(tmp_path):
    from lmms_ac.report import build_report
    from lmms_ac.testing.results_fixture import make_table

    t = make_table(benchmarks=["mme"], perturbations=["tokperm"], pil_variants=("clip-l14-336",))
    t = t[t["variant"] == "clip-l14-336"].assign(variant=MATH)
    t.to_csv(tmp_path / "table.csv", index=False)
    html = build_report(tmp_path / "table.csv", None, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "patch information loss (2x2)" in html and "undefinedmacro" in html

    # only perturbed rows: no clean score to relate the probes to; every section says so, nothing raises
    t[t["perturbation"] != "none"].to_csv(tmp_path / "perturbed.csv", index=False)
    html = build_report(tmp_path / "perturbed.csv", None, tmp_path / "p.html").read_text(encoding="utf-8")
    assert "no clean run of mme for the pil map" in html


# ------------------------------------------------------------------ prompts files
@pytest.mark.parametrize(
    "name,text,message",
    [
        ("blank.txt", "\n   \n\t\n", r"holds no prompt \(it is empty or only blank lines\)"),
        ("empty.txt", "", r"holds no prompt"),
        ("image.txt", "<image>\n\n", r"holds no prompt"),
        ("blank.jsonl", "\n\n", r"holds no prompt"),
        ("cut.jsonl", '{"question": "a"}\n{"question": "b', r"cut.jsonl:2: not a JSON record"),
        ("blank_q.jsonl", '{"question": "  "}\n', r"blank_q.jsonl:1: the prompt is blank"),
        ("cut.json", '[{"question": "a"},\n{"quest', r"cut.json:2: not valid JSON"),
        ("other.json", '[{"question": "a"}, {"answer": "b"}]', r"other.json record 1: a record needs"),
    ],
)
def test_a_prompts_file_without_prompts_is_an_error_not_the_neutral_set(tmp_path, name, text, message):
    from lmms_ac.layers.prompts import read_prompts

    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_prompts(None, str(tmp_path / name))


def test_prompts_from_a_json_list_and_blank_prompt_arguments(tmp_path):
    from lmms_ac.layers.extraction import NEUTRAL_PROMPTS
    from lmms_ac.layers.prompts import read_prompts

    (tmp_path / "p.json").write_text('[{"question": "<image>\\nWhat is it?"}, {"text": "Count."}]')
    assert read_prompts(None, str(tmp_path / "p.json")) == ["What is it?", "Count."]
    assert read_prompts(None, None) == list(NEUTRAL_PROMPTS)  # nothing given: the neutral set, by design
    (tmp_path / "latin1.txt").write_bytes("caf\xe9?".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text"):
        read_prompts(None, str(tmp_path / "latin1.txt"))
    with pytest.raises(ValueError, match=r"--prompt ' ' is blank"):
        read_prompts([" "], None)


# ------------------------------------------------------------------ zero-shot sources and task YAML
def test_zero_shot_task_yaml_keeps_user_text_inside_its_values(tmp_path):
    from lmms_eval.utils import load_yaml_config

    from lmms_ac.layers.zeroshot import prepare_task
    from lmms_ac.testing.tiny_layers import write_classification_folder

    source = tmp_path / "images\nprocess_docs: !function os.getcwd\nfewshot_split: test"
    write_classification_folder(str(source), per_class=1)
    prompt = "Which class?\ndoc_to_target: 0\n# end"
    prepare_task("tiny", str(source), str(tmp_path / "zs"), n=3, prompt=prompt)
    text = (tmp_path / "zs" / "zeroshot_tiny.yaml").read_text(encoding="utf-8")
    cfg = load_yaml_config(str(tmp_path / "zs" / "zeroshot_tiny.yaml"))
    assert cfg["test_split"] == "test" and cfg["doc_to_target"] == "label" and cfg["doc_to_text"] == prompt
    assert cfg["metadata"]["source"] == str(source) and "process_docs" not in cfg and "fewshot_split" not in cfg
    assert cfg["process_results"].__module__ == "lmms_ac.layers.zeroshot"
    assert cfg["doc_to_visual"].__name__ == "doc_to_visual" and cfg["process_results"].__name__ == "process_results"
    assert text.startswith("# Zero-shot classification") and str(source) not in text.split("\ntask:")[0]


def test_zero_shot_sources_a_missing_path_is_never_a_hub_id(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.layers.zeroshot import encoder_model_id, load_source, local_or_hub
    from lmms_ac.testing.tiny_layers import write_classification_folder

    folder = write_classification_folder(str(tmp_path / "imgs"), per_class=1)
    assert local_or_hub("openai/clip-vit-base-patch32", "encoder") == "openai/clip-vit-base-patch32"
    assert local_or_hub("gpt2", "encoder") == "gpt2"
    assert local_or_hub(str(folder), "encoder") == str(folder)
    for missing in ("data/cifar/test", "./clip", "~/no-such-lmms-ac-dir", str(tmp_path / "clip"), "a b/c", "org/"):
        with pytest.raises(FileNotFoundError, match=r"does not exist; give an existing folder, or a hub id"):
            local_or_hub(missing, "encoder")
    with pytest.raises(FileNotFoundError, match=r"dataset source 'data/cifar/test' does not exist"):
        load_source("data/cifar/test")
    with pytest.raises(FileNotFoundError, match=r"encoder '.*/missing/clip' does not exist"):
        encoder_model_id(f"clip:{tmp_path}/missing/clip")
    argv = ["zeroshot-encoder", f"tiny={folder}", "--encoder", str(tmp_path / "missing"), "--out", "-"]
    assert main(argv + ["--no-progress"]) == 2
    assert "encoder '" in capsys.readouterr().err and not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["zeroshot-tasks", "x=/tmp", "--to", "out", "--n", "0"],
        ["zeroshot-encoder", "x=/tmp", "--encoder", "e", "--n", "-1"],
        ["layers-knn", "--model", "m", "--data", "docci", "--captions", "c", "--k", "0"],
        ["score-a", "--pretrained", "p", "--n", "0"],
        ["score-a", "--pretrained", "p", "--batch-size", "0"],
        ["score-c", "--vision", "clip:x", "--ocr", "--ocr-n", "0"],
        ["make-ocr-pairs", "--to", "d", "--n", "0"],
    ],
)
def test_counts_below_one_are_refused_by_the_argument_parser(argv, capsys):
    from lmms_ac.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "must be >= 1, got" in capsys.readouterr().err


# ------------------------------------------------------------------ the A score's caption data
def test_score_a_names_a_truncated_caption_file_before_any_model_loads(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.testing.datasets import write_llava_pretrain

    data = write_llava_pretrain(str(tmp_path / "558k"), n=3)
    text = Path(data["captions"]).read_text(encoding="utf-8")
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2], encoding="utf-8")
    argv = ["score-a", "--pretrained", str(tmp_path / "no-model"), "--captions", str(cut), "--images", data["images"]]
    assert main(argv + ["--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert f"caption file {cut} is not valid JSON at line" in err and "cut short" in err


def test_score_a_library_refuses_zero_pairs_and_names_a_bad_image(tmp_path):
    from lmms_ac.scores.alignment import caption_loglikelihood, open_image, read_llava_pretrain, sample_pairs
    from lmms_ac.testing.datasets import write_llava_pretrain

    data = write_llava_pretrain(str(tmp_path / "558k"), n=3)
    pairs = read_llava_pretrain(data["captions"], data["images"])
    with pytest.raises(ValueError, match=r"number of caption pairs must be >= 1, got 0; pass --n 1 or more"):
        sample_pairs(pairs, 0, seed=0)
    with pytest.raises(ValueError, match="no caption pairs to score"):
        caption_loglikelihood(None, [], batch_size=2)
    pairs[0].image_path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"image {pairs[0].image_path} cannot be decoded \(UnidentifiedImageError"):
        open_image(pairs[0].image_path)

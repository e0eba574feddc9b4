"""Tiny LLaVA checkpoints with random weights, saved in the formats users bring.

* ``make_tokenizer(dir)``: a byte-level BPE tokenizer trained on a small corpus, with the
  Llama-style special tokens (``<s>``, ``</s>``, ``<unk>``, ``<pad>``) and ``<image>``.
* ``make_llava_hf(dir)``: ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` (llava-hf layout).
* ``convert_to_original(hf_dir, out_dir)``: the same weights in the original LLaVA layout as LLaVA-1.5
  was released (layout ``a`` of ``lmms_ac.testing.released``: ``model_type: llava`` +
  ``LlavaLlamaForCausalLM``, a transformers-4.31 config, ``pytorch_model-0000N-of-00002.bin`` shards
  with their index, ``generation_config.json``, ``model.mm_projector.*`` keys), with a separate CLIP
  tower directory and the llava-hf twin's own tokenizer (so both give the same ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import torch

# the llava-hf 1.5 template's shape: structured content (images first, then text) or plain strings
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% "
    "endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: Answer the question using a single word or phrase.",
    "Is there a dog in this image? Please answer yes or no. Yes No yes no",
    "Answer with the option's letter from the given choices directly. A. B. C. D.",
    "What color is the car? red green blue yellow black white a photo of a cat on a mat",
    "0 1 2 3 4 5 6 7 8 9 How many people are there in the picture?",
]


def make_tokenizer(directory: Optional[str] = None, vocab_size: int = 400, corpus: Optional[list] = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + list(corpus or [])) * 4, trainer)  # corpus: extra text whose words become tokens
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.add_tokens(["<image>"], special_tokens=True)
    if directory:
        fast.save_pretrained(directory)
    return fast


def tiny_configs(vocab_size: int, image_token_id: int, image_size: int = 32, patch_size: int = 8, text_layers: int = 2):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def make_llava_hf(
    directory: str, seed: int = 0, image_size: int = 32, patch_size: int = 8, chat_template: bool = True
) -> str:
    """Write a tiny random llava-hf checkpoint (model + processor) to ``directory``."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = tiny_configs(len(tokenizer), image_token_id, image_size, patch_size)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE if chat_template else None,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def convert_to_original(
    hf_dir: str, out_dir: str, tower_dir: Optional[str] = None, stage1_only: bool = False, drop_projector: bool = False
) -> Dict[str, str]:
    """Re-save a llava-hf checkpoint in the original LLaVA layout.

    The CLIP tower goes to ``tower_dir`` (default ``<out_dir>/../clip-vit-tiny-patch8``; the name
    lets the family be inferred, as for real hub ids). ``stage1_only`` writes just ``mm_projector.bin``
    plus the config (the LLM then comes from ``model_base``, returned as ``base_llm``).
    """
    from safetensors.torch import save_file
    from transformers import AutoProcessor, CLIPVisionModel, LlavaForConditionalGeneration

    from lmms_ac.testing.released import write_sharded

    model = LlavaForConditionalGeneration.from_pretrained(hf_dir)
    processor = AutoProcessor.from_pretrained(hf_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tower_dir = tower_dir or str(out.parent / "clip-vit-tiny-patch8")
    tower = CLIPVisionModel(model.config.vision_config)
    tower.load_state_dict(model.model.vision_tower.state_dict())
    tower.save_pretrained(tower_dir)
    processor.image_processor.save_pretrained(tower_dir)

    text_cfg = model.config.text_config.to_dict()
    config = {
        k: v
        for k, v in text_cfg.items()
        if not k.startswith("_") and k not in ("architectures", "transformers_version")
    }
    config.update(  # LLaVA-1.5 as released: model_type 'llava' (LLaVA < 1.2), transformers 4.31's fields
        model_type="llava",
        architectures=["LlavaLlamaForCausalLM"],
        transformers_version="4.31.0",
        torch_dtype="float32",
        rope_scaling=None,
        pretraining_tp=1,
        mm_vision_tower=tower_dir,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_hidden_size=model.config.vision_config.hidden_size,
        image_aspect_ratio="pad",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
    )
    proj = model.model.multi_modal_projector
    projector = {
        "model.mm_projector.0.weight": proj.linear_1.weight,
        "model.mm_projector.0.bias": proj.linear_1.bias,
        "model.mm_projector.2.weight": proj.linear_2.weight,
        "model.mm_projector.2.bias": proj.linear_2.bias,
    }
    projector = {k: v.detach().clone().contiguous() for k, v in projector.items()}
    llm_state = {f"model.{k}": v for k, v in model.model.language_model.state_dict().items()}
    llm_state["lm_head.weight"] = model.lm_head.weight
    llm_state = {k: v.detach().clone().contiguous() for k, v in llm_state.items()}
    tokenizer = processor.tokenizer
    tokenizer.chat_template = None
    result = {"checkpoint": str(out), "tower": tower_dir}
    if stage1_only:
        base = out.parent / "base-llm"
        from transformers import AutoConfig

        base.mkdir(parents=True, exist_ok=True)
        base_cfg = AutoConfig.for_model(
            "llama",
            **{
                k: v
                for k, v in config.items()
                if not k.startswith("mm_") and k not in ("model_type", "architectures", "image_aspect_ratio")
            },
        )
        base_cfg.save_pretrained(base)
        save_file(llm_state, str(base / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(base)
        torch.save(projector, out / "mm_projector.bin")
        result["base_llm"] = str(base)
    else:
        state = dict(llm_state)
        if not drop_projector:
            state.update(projector)
        write_sharded(out, state)
        tokenizer.save_pretrained(out)
        with open(out / "generation_config.json", "w") as fh:
            json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "transformers_version": "4.31.0"}, fh)
    with open(out / "config.json", "w") as fh:
        json.dump(config, fh, indent=2)
    return result

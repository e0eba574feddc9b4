"""Prompt formats. ``vicuna_v1`` is LLaVA-1.5's conversation template (llava/conversation.py,
``conv_vicuna_v1``); ``chat_template`` uses the tokenizer's own Jinja template; ``plain`` is
stage-1 pre-training's bare ``<image>\\n{text}``."""

from __future__ import annotations

from typing import Any, Optional

IMAGE_TOKEN = "<image>"
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PROMPT_FORMATS = ("auto", "vicuna_v1", "chat_template", "plain")
# ``conv_llava_plain.sep``: stage-1 training (``preprocess_plain``) appends it after each caption and its
# loss covers it; the A score leaves it out by default (``score_separator`` scores it too)
PLAIN_SEPARATOR = "\n"


def place_images(text: str, n_images: int) -> str:
    """Put one ``<image>`` placeholder per image before the text unless the text already has them."""
    present = text.count(IMAGE_TOKEN)
    if present == n_images:
        return text
    if present:
        raise ValueError(f"prompt has {present} '{IMAGE_TOKEN}' placeholders but {n_images} images were given")
    return ("\n".join([IMAGE_TOKEN] * n_images) + "\n" + text) if n_images else text


def resolve_format(requested: str, tokenizer: Any) -> str:
    if requested not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {requested!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    if requested == "auto":
        return "chat_template" if getattr(tokenizer, "chat_template", None) else "vicuna_v1"
    if requested == "chat_template" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "prompt_format=chat_template but the checkpoint's tokenizer has no chat template; use vicuna_v1"
        )
    return requested


def build_prompt(user_text: str, n_images: int, fmt: str, tokenizer: Any = None, system: Optional[str] = None) -> str:
    """The full prompt up to where the assistant's answer starts."""
    text = place_images(user_text, n_images)
    if fmt == "vicuna_v1":
        return f"{system or VICUNA_V1_SYSTEM} USER: {text} ASSISTANT:"
    if fmt == "plain":
        return text
    if fmt == "chat_template":
        return _chat_prompt(user_text, n_images, tokenizer, system)
    raise ValueError(f"unknown prompt format {fmt!r}")


def _chat_prompt(user_text: str, n_images: int, tokenizer: Any, system: Optional[str]) -> str:
    """Render with the checkpoint's template: structured content (``{"type": "image"}`` items, as
    llava-hf templates expect) when the text has no placeholders of its own, else plain string
    content with ``<image>`` placeholders; the result must hold one placeholder per image."""
    head = [{"role": "system", "content": system}] if system else []
    attempts = []
    if IMAGE_TOKEN not in user_text:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": user_text}]
        attempts.append(head + [{"role": "user", "content": content}])
    attempts.append(head + [{"role": "user", "content": place_images(user_text, n_images)}])
    for messages in attempts:
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # a template that only takes one content shape
            continue
        if text.count(IMAGE_TOKEN) == n_images:
            return text
    raise ValueError(
        "the checkpoint's chat template does not place one '<image>' per image; use prompt_format=vicuna_v1"
    )

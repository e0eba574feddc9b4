"""Model arguments, parsed strictly in one place.

``--model_args k=v,...`` reaches a model as strings (lmms-eval's own parser turns ``true``/``false``
into booleans but leaves ``off`` a string, and ``bool("off")`` is True). Here every argument is
converted by its annotation: booleans accept exactly ``true/false, 1/0, yes/no, on/off`` (any case),
integers must be integers, anything else is an error naming the argument and what it accepts.

* ``typed_arguments``: decorator for a model's ``__init__`` converting each argument by its annotation
  (``bool``, ``int``, ``float``, ``str`` and ``Optional`` of them), whatever the caller passed;
  ``Annotated[int, AtLeast(1)]`` also refuses impossible values (``max_new_tokens=0``) before the model loads.
* ``split_arg_string``: ``"a=1,b='x,y'"`` -> ``{"a": "1", "b": "'x,y'"}`` (commas inside quotes or
  brackets do not split, as lmms-eval's parser), without lmms-eval's type guessing.
* ``merge_arguments``: model arguments + the evaluator's ``--batch_size``/``--device``; an argument given
  both ways must agree (a value left at the command line's default yields to the model argument).
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
NONE_WORDS = ("", "none", "null")
# lmms-eval's command-line defaults (lmms_eval/__main__.py): a value equal to these, of this type, was not typed by the
# user
CLI_DEFAULTS: Dict[str, Any] = {"batch_size": 1}


@dataclass(frozen=True)
class AtLeast:
    """``Annotated[int, AtLeast(1)]``: the converted number must be >= ``minimum``."""

    minimum: int


def parse_bool(value: Any, name: str = "value") -> bool:
    """``True``/``False``, 0/1 or one of true/false, 1/0, yes/no, on/off; anything else raises ``ValueError``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(
        f"{name}={value!r} is not a boolean; write one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}"
    )


def parse_int(value: Any, name: str = "value", minimum: Optional[int] = None) -> int:
    """An integer given as an int, an integral float or a decimal string; ``minimum`` is checked."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an integer") from None
    if not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; give {name}={minimum} or more")
    return value


def parse_float(value: Any, name: str = "value") -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a number")
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number") from None


def convert(value: Any, annotation: Any, name: str) -> Any:
    """``value`` converted to ``annotation`` (``bool``, ``int``, ``float``, ``str``, ``Optional`` of one, or
    ``Annotated`` with ``AtLeast``)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        floors = [m.minimum for m in args[1:] if isinstance(m, AtLeast)]
        if args[0] is int and floors:
            return parse_int(value, name, minimum=max(floors))
        value = convert(value, args[0], name)
        if floors and value is not None and value < max(floors):
            raise ValueError(f"{name} must be >= {max(floors)}, got {value}; give {name}={max(floors)} or more")
        return value
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], name) if len(inner) == 1 else value
    if annotation is bool:
        return parse_bool(value, name)
    if annotation is int:
        return parse_int(value, name)
    if annotation is float:
        return parse_float(value, name)
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def typed_arguments(init: Callable) -> Callable:
    """Decorate ``__init__`` so every annotated argument is converted (and checked) before the body runs."""
    signature = inspect.signature(init)
    hints = typing.get_type_hints(init, include_extras=True)
    plain = {n for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @functools.wraps(init)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, value in list(bound.arguments.items()):
            if name in plain and name in hints and hints[name] is not Any:
                bound.arguments[name] = convert(value, hints[name], name)
        return init(*bound.args, **bound.kwargs)

    return wrapper


def split_arg_string(text: "str | Mapping[str, Any]") -> Dict[str, Any]:
    """``k=v,k2=v2`` -> ``{k: v}`` with values kept as strings; commas inside quotes or ``{}``/``[]`` do
    not split (lmms-eval's rule). An item without ``=`` or a key given twice is an error. A mapping
    (model arguments given as a dict through the Python API) is returned as a dict."""
    if isinstance(text, Mapping):
        return {str(k): v for k, v in text.items()}
    items, current, depth, quote = [], [], 0, None
    for i, ch in enumerate(text or ""):
        if ch in ("'", '"') and (i == 0 or text[i - 1] != "\\"):
            quote = None if quote == ch else (ch if quote is None else quote)
        elif quote is None and ch in "{[":
            depth += 1
        elif quote is None and ch in "}]":
            depth -= 1
        elif quote is None and depth == 0 and ch == ",":
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    out: Dict[str, str] = {}
    for item in items:
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"model argument {item.strip()!r} is not key=value; write --model_args key=value,key2=value2"
            )
        if key in out:
            raise ValueError(f"model argument {key!r} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


def merge_arguments(
    model_args: Mapping[str, Any],
    evaluator_args: Optional[Mapping[str, Any]] = None,
    cli_defaults: Mapping[str, Any] = CLI_DEFAULTS,
) -> Dict[str, Any]:
    """Model arguments plus the evaluator's extra ones (``batch_size``, ``device``...; ``None`` = not given).

    An argument in both places must have the same value, except that an evaluator value equal to the
    command line's own default (same value and type: argparse passes typed values as strings) yields
    to the model argument: ``--model_args batch_size=8`` works without ``--batch_size``."""
    merged = dict(model_args)
    for key, value in (evaluator_args or {}).items():
        if value is None:
            continue
        if key not in merged:
            merged[key] = value
            continue
        default = cli_defaults.get(key, object())
        if type(value) is type(default) and value == default:
            continue
        if str(value).strip() != str(merged[key]).strip():
            raise ValueError(
                f"{key} is given twice with different values: {merged[key]!r} in --model_args and {value!r} "
                f"from the command line (--{key}); give one"
            )
    return merged

"""Images that fail to decode are reported by doc id, not scored silently.

lmms-eval sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` for the whole process, so a truncated
image decodes without error, its missing part filled in, and is scored as if it were whole. The model
fetches each request's images with strict decoding: an image that fails is logged with its task and
doc id, then decoded leniently as lmms-eval intends (so a run's results stay comparable with other
models'); an image that cannot be decoded even leniently is an error naming the doc.

"Fails to decode" is any error Pillow raises on damaged data (``OSError``, ``SyntaxError``, ``ValueError``,
``EOFError``, ``struct.error``) and ``DecompressionBombError`` (more than twice ``Image.MAX_IMAGE_PIXELS``);
an image over ``MAX_IMAGE_PIXELS`` but under twice that (Pillow only warns: ``DecompressionBombWarning``) is
logged with its doc and decoded, as lmms-eval would.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, List, Optional, Set

from loguru import logger

from lmms_ac.verify_images import decode_errors


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Decode with ``LOAD_TRUNCATED_IMAGES`` off (truncated files raise instead of being filled in) and Pillow's
    ``DecompressionBombWarning`` raised as an error."""
    from PIL import Image, ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode_all(visuals: List) -> List:
    from PIL import Image

    for v in visuals or []:
        if isinstance(v, Image.Image):
            v.load()  # lazily opened images decode here
    return visuals


def fetch_visuals(fetch: Callable[[], List], where: str, reported: Optional[Set[str]] = None) -> List:
    """``fetch()`` (the doc lookup and the task's ``doc_to_visual``) under strict decoding. On a
    decoding failure ``where`` (e.g. "task 'mme' split 'test' doc 17") is logged (once per caller:
    ``reported`` is the caller's set of places already logged) and the images are fetched again with
    lmms-eval's lenient decoding; a second failure raises ``RuntimeError``."""
    try:
        with strict_decoding():
            return _decode_all(fetch())
    except decode_errors() as err:  # PIL: truncated data, unidentified or corrupt files, bombs
        strict_error = err
    if reported is None or where not in reported:
        if reported is not None:
            reported.add(where)
        logger.warning(
            f"{where}: image failed to decode ({type(strict_error).__name__}: {strict_error}); scoring it as lmms-eval "
            "decodes it (truncated data filled in, an image over Pillow's pixel limit decoded anyway). "
            "Find every such doc with `lmms-ac datasets --verify TASK`."
        )
    try:
        return _decode_all(fetch())
    except Exception as err:
        logger.error(f"{where}: image cannot be decoded: {type(err).__name__}: {err}")
        raise RuntimeError(
            f"{where}: image cannot be decoded ({type(err).__name__}: {err}); fix or drop this doc "
            "(`lmms-ac datasets --verify TASK` lists every bad doc)"
        ) from err

"""The bundled law examples (published data shipped in ``lmms_ac/data``): their files and column conventions.

Torch- and pandas-free so that command-line parsers can offer the names as choices; ``lmms_ac.law.data``
loads them.
"""

from __future__ import annotations

from typing import Dict

#: bundled examples: file in lmms_ac/data and the column conventions that go with it
EXAMPLES: Dict[str, Dict[str, object]] = {
    "law-v1": {
        "file": "law_v1_13settings.csv",
        "setting_col": "setting",
        "a_col": "A_embed_{benchmark}",
        "c_col": "C_pck10",
        "benchmarks": None,  # the registry's law benchmarks (lmms_ac.benchmarks.law_benchmarks)
        "normalize": "minmax",
    },
}

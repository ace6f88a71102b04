"""opensir_lite: OpenSIR self-play (teacher writes problems, student solves them) as QLoRA GRPO on TRL.

Data flows one way through the modules, in layers (``tests/test_layers.py`` holds every import to them):
``prompts``, ``generation``, ``sandbox`` -> ``parsing``, ``pool`` -> ``grading``, ``rewards``, ``sampling``,
``programs`` -> ``config`` (validation only), ``evaluation`` -> the engine: ``round`` (a round as data and its stages),
``round_output`` (rows, metrics, evidence), the sources ``selfplay`` and ``control``, and ``rollout`` (TRL's
``rollout_func``) -> ``runtime`` (machine decisions), ``callbacks``, ``training`` -> ``exploration``, ``hub``.
Only ``config`` (TRL's config classes) and ``training`` (the trainer, peft, bitsandbytes) import trl.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend tries, on CPUs with AVX512-BF16, to download an optional kernel from the Hugging Face
# Hub at import time and warns when it cannot (always, offline). The fallback is its own CPU code; the warning
# would only be noise in every command's output, so it is silenced here, before anything imports bitsandbytes.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

"""opensir_lite: OpenSIR self-play (teacher writes problems, student solves them) as QLoRA GRPO on TRL.

Data flows one way through the modules:
``prompts`` -> ``parsing`` -> ``grading`` -> ``pool`` / ``embedding`` -> ``rewards`` -> ``generation`` ->
``selfplay`` -> ``config`` -> ``training``. Only ``config`` and ``training`` import trl, peft or bitsandbytes.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend tries, on CPUs with AVX512-BF16, to download an optional kernel from the Hugging Face
# Hub at import time and warns when it cannot (always, offline). The fallback is its own CPU code; the warning
# would only be noise in every command's output, so it is silenced here, before anything imports bitsandbytes.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

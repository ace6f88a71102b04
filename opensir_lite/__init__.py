"""opensir_lite: OpenSIR self-play (teacher writes problems, student solves them) as QLoRA GRPO on TRL.

Data flows one way through the modules:
``prompts`` -> ``parsing`` -> ``grading`` -> ``pool`` / ``embedding`` -> ``rewards`` -> ``generation`` ->
``selfplay`` -> ``config`` -> ``training``. Only ``config`` and ``training`` import trl, peft or bitsandbytes.
"""

__version__ = "0.1.0"

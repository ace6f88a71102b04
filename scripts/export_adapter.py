"""Copy a run's LoRA adapter (or a checkpoint's) with its weights in bf16: python scripts/export_adapter.py SRC OUT

python scripts/export_adapter.py runs/learn-cpu-qwen/checkpoint-15 results/qwen0.5b/adapters/seed42 [--dtype bfloat16]

The copy loads like the original (``scripts/evaluate.py --adapter OUT``); its base model is named by Hub id.
"""

from __future__ import annotations

import argparse
import sys

from opensir_lite.hub import PublishError, export_adapter


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a run folder or checkpoint-N folder holding adapter_model.safetensors")
    p.add_argument("out", help="folder to write adapter_config.json and adapter_model.safetensors into")
    p.add_argument("--dtype", default="bfloat16", help="bfloat16 (default), float16 or float32")
    args = p.parse_args()
    try:
        path = export_adapter(args.source, args.out, args.dtype)
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

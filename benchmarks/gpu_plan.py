"""A recipe's memory and time on a GPU, on paper: python benchmarks/gpu_plan.py --recipe colab-t4 --gpu t4
[--backend transformers|vllm_lora] [--set max_generate_batch=32 ...] [--json FILE]
(--gpu: t4, l4, a100, h100; --protocol: the claim's whole test in GPU hours)

Everything printed is an ESTIMATE (opensir_lite/plan.py says how it is made and lists every assumption).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from opensir_lite.plan import GPUS, claim_protocol, format_plan, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="colab-t4")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="t4")
    parser.add_argument("--backend", choices=["transformers", "vllm_lora"], default="transformers")
    parser.add_argument("--protocol", action="store_true", help="the claim's whole test: GPU hours")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override recipe fields")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        import yaml

        overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
        result = (claim_protocol(args.gpu, args.backend) if args.protocol
                  else plan(args.recipe, args.gpu, args.backend, overrides=overrides))  # fmt: skip
    except KeyError as e:
        print(f"error: no shape known for model {e} (opensir_lite/plan.py MODELS)", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - an unknown recipe: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.protocol:
        print(f"ESTIMATE (not measured): the claim's test on {result['gpu']} with {result['backend']}")
        for k, v in result["hours"].items():
            print(f"  {k}: {v} h")
        print(f"  total: {result['total_hours']} GPU hours")
    else:
        print(format_plan(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    if not args.protocol and not math.isfinite(result["step_s"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

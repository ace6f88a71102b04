"""Train a policy with OpenSIR self-play: python scripts/train.py --config <recipe or YAML> [--field value ...]"""

from __future__ import annotations

import sys

from opensir_lite.config import ConfigError
from opensir_lite.exploration import write_run_plots
from opensir_lite.pool import PoolFileError
from opensir_lite.runtime import parse_config
from opensir_lite.training import ModelLoadError, RunFolderError, TrainingSetupError, train


def main() -> int:
    if "--list_recipes" in sys.argv[1:]:
        from opensir_lite.config import list_recipes, recipe_purpose

        for name in list_recipes():
            print(f"{name:24} {recipe_purpose(name)}")
        return 0
    try:
        train_args, model_args = parse_config()
        output_dir = train(train_args, model_args)
    except (ConfigError, PoolFileError, TrainingSetupError, RunFolderError, ModelLoadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: adapter, pool.jsonl and metrics.jsonl in {output_dir}")
    if train_args.write_plots:
        try:
            for path in write_run_plots(output_dir, train_args.solve_rate_lower, train_args.solve_rate_upper):
                print(f"wrote {path}")
        except (OSError, ValueError, ImportError) as e:  # the run is saved; a plot problem must not fail it
            print(f"warning: could not write the plots: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

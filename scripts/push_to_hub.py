"""Push a trained adapter (and optionally its problem pool) to the Hugging Face Hub with a model card.

python scripts/push_to_hub.py --run_dir runs/colab-t4 --repo_id USER/NAME [--private] [--with_pool]
python scripts/push_to_hub.py --run_dir runs/smoke --repo_id USER/NAME --with_pool --dry_run OUT_DIR

--dry_run writes exactly the files that would be uploaded (OUT_DIR/model, OUT_DIR/pool) and uploads nothing.
The token comes from HF_TOKEN or `hf auth login`.
"""

from __future__ import annotations

import argparse
import sys

from opensir_lite.hub import PublishError, push_run, stage_run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", required=True, help="training output folder (adapter, pool.jsonl, metrics.jsonl)")
    p.add_argument("--repo_id", required=True, help="USER/NAME of the model repo")
    p.add_argument("--private", action="store_true", help="create the repos as private")
    p.add_argument("--with_pool", action="store_true", help="also push pool.jsonl as a dataset repo")
    p.add_argument("--pool_repo_id", default=None, help="dataset repo of the pool (default REPO_ID-pool)")
    p.add_argument("--eval_results", nargs="*", default=[], help="results.json files of scripts/evaluate.py")
    p.add_argument("--dry_run", metavar="OUT_DIR", default=None, help="write the files instead of uploading")
    args = p.parse_args()
    try:
        if args.dry_run:
            staged = stage_run(
                args.run_dir, args.dry_run, args.repo_id, args.with_pool, args.pool_repo_id, args.eval_results
            )
            for kind, folder in staged.items():
                print(f"{kind}: {folder}")
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        print(f"  {path.relative_to(folder)}")
            return 0
        urls = push_run(args.run_dir, args.repo_id, args.private, args.with_pool, args.pool_repo_id, args.eval_results)
    except (PublishError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # huggingface_hub errors (no token, no network, no permission): one line, no traceback
        print(f"error: upload failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    for kind, url in urls.items():
        print(f"{kind}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

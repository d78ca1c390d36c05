"""`tweetguard` console script: parse, validate, then call one function. Nothing heavy at import time.

Subcommand names and flags are part of the product: keep them stable.
"""

from __future__ import annotations

import argparse
import os
import sys

from training.config import ConfigError, load_config

# Nothing here should ever reach a model hub or a dataset hub unless the user opts in explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=3e-5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tweetguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="show the resolved config")
    p.add_argument("action", choices=["show"])
    _add_config_args(p)

    p = sub.add_parser("data", help="prepare the unified dataset and print the data report")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a cached copy exists")
    return parser


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from training.data import prepare

    cfg = load_config(args.config, args.overrides)
    prepared = prepare(cfg.data, force=args.force, progress=True)
    print(prepared.card.markdown)
    print(f"dataset: {prepared.path}\ndata card: {prepared.card_md_path} (+ .json)")
    return 0


COMMANDS = {"config": _cmd_config, "data": _cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"tweetguard {args.command}: config error:\n{e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"tweetguard {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `rayft` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rayft.config import UserInputError, load_config, to_yaml
from rayft.training.loopback import keep_embedded_ray_on_loopback

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


def _ray_command(commands: Any, name: str, help_text: str, config_help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand that runs on Ray: CONFIG, dotted overrides and --address."""
    command = commands.add_parser(name, help=help_text)
    command.add_argument("config", help=config_help)
    command.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, {example}")
    command.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayft", description="Fine-tune language models on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check an experiment file and print the resolved config")
    validate.add_argument("config", help="experiment YAML")
    validate.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=1e-4")

    _ray_command(commands, "train", "fine-tune as the experiment file says", "experiment YAML", "e.g. train.lr=1e-4").add_argument(
        "--resume", action="store_true", help="continue the run named by the config"
    )
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint (or the base model) on a split, on Ray")
    evaluate.add_argument("config", help="experiment YAML (names the run and its data)")
    evaluate.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    which = evaluate.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", default="best", help="best, last (from the run's result.json) or a checkpoint path (default best)")
    which.add_argument("--base", action="store_true", help="evaluate the base model, before fine-tuning")
    evaluate.add_argument("--split", default="validation", choices=["validation", "test", "train"], help="split to evaluate (default validation)")
    evaluate.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    _ray_command(
        commands, "tune", "search hyperparameters (the experiment's tune section) with Ray Tune",
        "experiment YAML with a tune section", "e.g. tune.num_samples=16",
    ).add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face model directory with a model card")
    export.add_argument("checkpoint", help="a checkpoint directory (runs/<name>/checkpoint_*)")
    export.add_argument("out", help="the directory to write (new or empty)")
    export.add_argument("--merge", action="store_true", help="merge a LoRA/DoRA/IA3 update into the base weights (loads with transformers alone)")
    data = commands.add_parser("data", help="look at the data as training will see it")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    preview = data_commands.add_parser("preview", help="show formatted training examples, trained part in [[ ]]")
    preview.add_argument("config", help="experiment YAML")
    preview.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    preview.add_argument("-n", type=int, default=3, help="how many examples (default 3)")
    report = data_commands.add_parser("report", help="write the data quality report (counts, duplicates, lengths, leakage)")
    report.add_argument("config", help="experiment YAML")
    report.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    report.add_argument("--out", default=None, help="directory for the report (default: the run directory)")
    return parser


def _data(args: argparse.Namespace) -> int:
    from rayft.data.preview import preview
    from rayft.data.report import report_for
    from rayft.models.loading import configured_tokenizer

    config = load_config(args.config, args.overrides)
    tokenizer = configured_tokenizer(config.model)
    if args.data_command == "preview":
        print("\n\n".join(preview(config, tokenizer, args.n)))
        return 0
    out_dir = Path(args.out) if args.out else config.run_dir
    print(report_for(config, tokenizer, out_dir), end="")
    print(f"\nwritten to {out_dir}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _train(args: argparse.Namespace) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        keep_embedded_ray_on_loopback()
    from rayft.training.launch import KFoldResult, TrainingFailed, render_kfold_summary, render_summary, train

    config = load_config(args.config, args.overrides)  # fail fast, before importing Ray's heavy parts
    try:
        result = train(config, address=args.address, resume=args.resume)
    except TrainingFailed as err:
        print(f"rayft: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(render_kfold_summary(result) if isinstance(result, KFoldResult) else render_summary(result))
    return 0


def _eval(args: argparse.Namespace) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        keep_embedded_ray_on_loopback()
    config = load_config(args.config, args.overrides)
    from rayft.tracking.eval_report import render_markdown
    from rayft.training.evaluation import EvaluationFailed, evaluate

    try:
        report = evaluate(config, checkpoint=None if args.base else args.checkpoint, split=args.split, address=args.address)
    except EvaluationFailed as err:
        print(f"rayft: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(render_markdown(report))
    print("written: " + ", ".join(report.files.values()))
    return 0


def _tune(args: argparse.Namespace) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        keep_embedded_ray_on_loopback()
    from rayft.tune.report import render_summary
    from rayft.tune.sweep import sweep

    config = load_config(args.config, args.overrides)
    result = sweep(config, address=args.address, resume=args.resume)
    assert config.tune is not None
    print(render_summary(result, config.tune))
    return 0 if result.best_trial is not None else EXIT_FAILURE


def _export(args: argparse.Namespace) -> int:
    from rayft.training.export import export_checkpoint

    exported = export_checkpoint(args.checkpoint, args.out, merge=args.merge)
    print(f"exported {exported.kind} model to {exported.out} (model card: {exported.out / 'README.md'})\n\n{exported.load_snippet}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come before or after options (`train cfg --resume lr=1` and `train cfg lr=1 --resume`).
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    handlers = {"validate": _validate, "train": _train, "tune": _tune, "data": _data, "eval": _eval, "export": _export}
    try:
        return handlers[args.command](args)
    except UserInputError as err:
        print(f"rayft: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""ASHA + Optuna against an exhaustive search without early stopping, on the same tiny task and
the same search space (learning rate x LoRA rank, 24 points).

    .venv/bin/python benchmarks/sweep_efficiency.py [--steps 40] [--samples 12] [--seed 0]

Target: ASHA's best validation loss within 2% of the exhaustive best, while spending at most
40% of the exhaustive search's training steps. Both sweeps run here, one after the other,
through `rayft.sweep`; the numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LRS = [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2]
RANKS = [2, 4, 8, 16]


def _experiment(storage: Path, steps: int, name: str, tune: dict) -> dict:
    return {
        "name": name,
        "model": {"tiny": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "max_position": 128}},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": str(REPO / "experiments/data/quickstart.jsonl"), "max_length": 96, "split": {"val": 0.1, "test": 0.0}},
        "train": {"max_steps": steps, "batch_size": 8, "eval_steps": 2, "save_steps": steps, "logging_steps": 2},
        "eval": {"metrics": ["perplexity"], "max_generate_examples": 1},
        "scaling": {"num_workers": 2},
        "run": {"storage_path": str(storage)},
        "tune": {"metric": "eval_loss", "mode": "min", **tune},
    }


ASHA = {"type": "asha", "time_attr": "training_iteration", "grace_period": 2, "reduction_factor": 5}
SPACE = {"train.lr": {"choice": LRS}, "method.r": {"choice": RANKS}}


def _asha_tune(samples: int, seed: int) -> dict:
    # 3 random start-up trials, then TPE (Optuna's default 10 would leave TPE nothing to do).
    return {"search": "optuna", "seed": seed, "startup_trials": 3, "num_samples": samples, "space": SPACE, "scheduler": ASHA}


def recorded_curves(sweep_dir: Path) -> dict[tuple, list[tuple[int, float]]]:
    """Every exhaustive trial's reports, (step, eval_loss) in order, keyed by its (lr, r)."""
    import yaml

    from rayft.tracking.metrics_log import METRICS_FILE, read_metrics

    curves = {}
    for trial_dir in sorted((sweep_dir / "trials").iterdir()):
        config = yaml.safe_load((trial_dir / "config.yaml").read_text())
        reports = [(row["step"], row["eval_loss"]) for row in read_metrics(trial_dir / METRICS_FILE) if "eval_loss" in row]
        curves[(config["train"]["lr"], config["method"]["r"])] = reports
    return curves


def replay(curves: dict[tuple, list[tuple[int, float]]], experiment: dict, scratch: Path) -> list[dict]:
    """The sweep's own searcher and scheduler (rayft's OptunaSpace and TPE settings, rayft's ASHA),
    fed the exhaustive search's recorded reports instead of training: a trial with the same values
    reports the same losses (training is seeded), so this is the sweep without its cost. Steps of
    a stopped trial are those of the report that stopped it (a real trial may run a step or two
    more before its workers stop). Returns one row per trial, in order."""
    import optuna
    from types import SimpleNamespace

    from rayft.config import config_from_dict
    from rayft.tune.schedulers import build_scheduler
    from rayft.tune.space import OptunaSpace
    from rayft.tune.sweep import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config_from_dict(experiment)
    section = config.tune
    space = OptunaSpace(section, config.model_dump(mode="json", exclude={"tune"}))
    study = optuna.create_study(direction="minimize", sampler=tpe_sampler(section))
    state = Path(tempfile.mkdtemp(dir=scratch)) / "scheduler.pkl"  # a fresh ASHA: a saved state would be restored
    scheduler = build_scheduler(section.scheduler, state)
    scheduler.set_search_properties(section.metric, section.mode)
    trials = []
    for index in range(section.num_samples):
        asked = study.ask()
        space(asked)
        trial = SimpleNamespace(trial_id=f"replay_{index:05d}")
        scheduler.on_trial_add(None, trial)
        stopped = False
        for iteration, (step, loss) in enumerate(curves[(asked.params["train.lr"], asked.params["method.r"])], start=1):
            result = {"training_iteration": iteration, "step": step, section.metric: loss}
            if scheduler.on_trial_result(None, trial, result) == "STOP":
                stopped = True
                break
        if stopped:
            scheduler.on_trial_remove(None, trial)
        else:
            scheduler.on_trial_complete(None, trial, result)
        study.tell(asked, loss)
        trials.append({"params": dict(asked.params), "steps": step, "last": loss, "stopped": stopped})
    return trials


def replay_seeds(curves: dict, storage: Path, steps: int, samples: int, seeds: range) -> dict:
    """Gap and step share of the ASHA + Optuna sweep for many Optuna seeds, by replay."""
    exhaustive_best = min(reports[-1][1] for reports in curves.values())
    exhaustive_steps = sum(reports[-1][0] for reports in curves.values())
    rows = []
    for seed in seeds:
        trials = replay(curves, _experiment(storage, steps, f"replay{seed}", _asha_tune(samples, seed)), storage)
        best = min(t["last"] for t in trials)
        rows.append({"seed": seed, "gap": (best - exhaustive_best) / exhaustive_best, "share": sum(t["steps"] for t in trials) / exhaustive_steps})
    met = [r for r in rows if r["gap"] <= 0.02 and r["share"] <= 0.40]
    shares = sorted(r["share"] for r in rows)
    return {"seeds": len(rows), "both_targets_met": len(met), "median_share": shares[len(shares) // 2], "worst_share": shares[-1],
            "gap_over_2pct": sum(r["gap"] > 0.02 for r in rows), "per_seed": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--samples", type=int, default=10, help="ASHA + Optuna trials (of the 24-point grid)")
    parser.add_argument("--seed", type=int, default=0, help="Optuna's seed of the real ASHA sweep")
    parser.add_argument("--replay-seeds", type=int, default=20, help="Optuna seeds replayed over the exhaustive curves")
    parser.add_argument("--keep", type=Path, help="keep both sweeps here (default: a temporary directory)")
    parser.add_argument("--replay-only", action="store_true", help="only replay, over the sweeps kept in --keep by an earlier run")
    args = parser.parse_args()
    import rayft

    with tempfile.TemporaryDirectory() as scratch:
        storage = args.keep or Path(scratch)
        if args.replay_only:
            curves = recorded_curves(storage / "exhaustive")
            print(json.dumps({k: v for k, v in replay_seeds(curves, Path(scratch), args.steps, args.samples, range(args.replay_seeds)).items()}, indent=1))
            print(json.dumps(replay(curves, _experiment(Path(scratch), args.steps, "r", _asha_tune(args.samples, args.seed)), Path(scratch)), indent=1))
            return
        exhaustive = rayft.sweep(_experiment(storage, args.steps, "exhaustive", {
            "search": "grid", "num_samples": 1, "space": SPACE, "scheduler": {"type": "none"},
        }))
        import ray

        ray.shutdown()
        asha = rayft.sweep(_experiment(storage, args.steps, "asha", _asha_tune(args.samples, args.seed)))
        curves = recorded_curves(Path(exhaustive.sweep_dir))
        replayed = replay(curves, _experiment(storage, args.steps, "replay", _asha_tune(args.samples, args.seed)), Path(scratch))
        seeds = replay_seeds(curves, Path(scratch), args.steps, args.samples, range(args.replay_seeds))
    steps = {name: sum(t.steps for t in sweep.trials) for name, sweep in (("exhaustive", exhaustive), ("asha", asha))}
    gap = (asha.best_metric - exhaustive.best_metric) / exhaustive.best_metric
    real_sequence = [(t.params["train.lr"], t.params["method.r"], t.stop_reason != "completed") for t in asha.trials]
    replayed_sequence = [(t["params"]["train.lr"], t["params"]["method.r"], t["stopped"]) for t in replayed]
    summary = {
        "exhaustive": {"trials": len(exhaustive.trials), "best_eval_loss": exhaustive.best_metric, "steps": steps["exhaustive"],
                       "best_params": exhaustive.best_params, "wall_s": exhaustive.wall_time_s},
        "asha_optuna": {"trials": len(asha.trials), "best_eval_loss": asha.best_metric, "steps": steps["asha"],
                        "best_params": asha.best_params, "wall_s": asha.wall_time_s,
                        "early_stopped": sum(t.stop_reason != "completed" for t in asha.trials)},
        "best_loss_gap": gap,
        "step_share": steps["asha"] / steps["exhaustive"],
        # As sets of (values, stopped): Tune's result grid does not list trials in the order they ran.
        "replay_matches_the_real_sweep": sorted(real_sequence) == sorted(replayed_sequence),
        "replayed_steps_of_this_seed": sum(t["steps"] for t in replayed),
        "replayed_seeds": {k: v for k, v in seeds.items() if k != "per_seed"},
    }
    print(json.dumps(summary, indent=2))
    for trial in asha.trials:
        print(f"  {json.dumps(trial.params):<40} {trial.steps:>3} steps  best {trial.best_metric}  {trial.stop_reason}")
    print(f"ASHA+Optuna (seed {args.seed}) best within {gap:+.2%} of exhaustive (target <= 2%), using {summary['step_share']:.0%} of its steps (target <= 40%)")
    print(f"Replayed over the recorded curves, {seeds['both_targets_met']} of {seeds['seeds']} Optuna seeds meet both targets "
          f"(median step share {seeds['median_share']:.0%}, {seeds['gap_over_2pct']} seeds miss the 2% gap)")


if __name__ == "__main__":
    main()

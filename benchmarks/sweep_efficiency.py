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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--samples", type=int, default=10, help="ASHA + Optuna trials (of the 24-point grid)")
    parser.add_argument("--keep", type=Path, help="keep both sweeps here (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0, help="Optuna's seed")
    args = parser.parse_args()
    import rayft

    space = {"train.lr": {"choice": LRS}, "method.r": {"choice": RANKS}}
    with tempfile.TemporaryDirectory() as scratch:
        storage = args.keep or Path(scratch)
        exhaustive = rayft.sweep(_experiment(storage, args.steps, "exhaustive", {
            "search": "grid", "num_samples": 1, "space": space, "scheduler": {"type": "none"},
        }))
        import ray

        ray.shutdown()
        asha = rayft.sweep(_experiment(storage, args.steps, "asha", {
            # 3 random start-up trials, then TPE (Optuna's default 10 would leave TPE nothing to do).
            "search": "optuna", "seed": args.seed, "startup_trials": 3, "num_samples": args.samples, "space": space,
            "scheduler": {"type": "asha", "time_attr": "training_iteration", "grace_period": 2, "reduction_factor": 5},
        }))
    steps = {name: sum(t.steps for t in sweep.trials) for name, sweep in (("exhaustive", exhaustive), ("asha", asha))}
    gap = (asha.best_metric - exhaustive.best_metric) / exhaustive.best_metric
    summary = {
        "exhaustive": {"trials": len(exhaustive.trials), "best_eval_loss": exhaustive.best_metric, "steps": steps["exhaustive"],
                       "best_params": exhaustive.best_params, "wall_s": exhaustive.wall_time_s},
        "asha_optuna": {"trials": len(asha.trials), "best_eval_loss": asha.best_metric, "steps": steps["asha"],
                        "best_params": asha.best_params, "wall_s": asha.wall_time_s,
                        "early_stopped": sum(t.stop_reason != "completed" for t in asha.trials)},
        "best_loss_gap": gap,
        "step_share": steps["asha"] / steps["exhaustive"],
    }
    print(json.dumps(summary, indent=2))
    for trial in asha.trials:
        print(f"  {json.dumps(trial.params):<40} {trial.steps:>3} steps  best {trial.best_metric}  {trial.stop_reason}")
    print(f"ASHA+Optuna best within {gap:+.2%} of exhaustive (target <= 2%), using {summary['step_share']:.0%} of its steps (target <= 40%)")


if __name__ == "__main__":
    main()

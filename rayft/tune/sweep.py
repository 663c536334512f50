"""`rayft tune` / `rayft.sweep`: Ray Tune over whole Ray Train runs.

Each trial is a Tune function that builds and fits a TorchTrainer with the trial's config (the
Train v2 pattern), reporting every evaluation to Tune through `TuneReportCallback` so that ASHA
or the median rule can stop it early. The data is prepared once, on Ray Data, and shared by
every trial. The sweep directory holds the Tune experiment (`tune/`, what `--resume` restores),
one Train run per trial (`trials/<trial id>/`) and the report.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from rayft.config import ConfigError, ExperimentConfig, TuneSection, config_from_dict, to_yaml, with_params
from rayft.data.pipeline import check_data_paths, prepare_datasets, read_general
from rayft.data.report import write_report
from rayft.models.loading import load_tokenizer, model_hidden_size, resolve_base_model, tokenizer_source
from rayft.training.cluster import ensure_ray
from rayft.training.deepspeed_config import build_deepspeed_config
from rayft.training.evaluation import general_dataset
from rayft.training.launch import CONFIG_FILE, as_config, build_trainer, differing_keys
from rayft.training.loop import LoopSettings
from rayft.tune.batch_size import find_batch_size
from rayft.tune.budget import BudgetedSearch
from rayft.tune.report import SWEEP_JSON, TrialRow, summarise_trials, write_sweep_report
from rayft.tune.schedulers import SCHEDULER_STATE, build_scheduler
from rayft.tune.space import OptunaSpace, tune_space

TUNE_DIR = "tune"
TRIALS_DIR = "trials"
BEST_CONFIG_FILE = "best_config.yaml"


@dataclass
class SweepResult:
    sweep_dir: str
    trials: list[TrialRow]
    best_trial: str | None
    best_metric: float | None
    best_params: dict[str, Any]
    best_config: str | None
    """A ready-to-run experiment file with the best trial's values."""
    best_checkpoint: str | None
    wall_time_s: float
    worker_hours: float
    budget_stop: str | None = None
    """Why the budget started no more trials (tune.budget), if it did."""
    notes: list[str] = field(default_factory=list)


def run_trial(
    params: dict[str, Any], base: dict[str, Any], datasets: dict[str, Any], base_model: str, tokenizer: str, trials_dir: str,
    labels: list[str] | None = None,
) -> None:
    """One trial: the base experiment with the sampled values, fitted as a whole Train run.
    A restored trial runs this again; the Train run of the same name resumes from its checkpoint."""
    trial_id = tune.get_context().get_trial_id()
    # Quoted: a trial id such as 58473567 or 12e45678 would otherwise parse as a number.
    config = config_from_dict(with_params(base, params), [f"name={json.dumps(trial_id)}", f"run.storage_path={json.dumps(trials_dir)}"])
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(to_yaml(config))
    settings = LoopSettings(
        experiment=config.model_dump(mode="json"), base_model=base_model, tokenizer=tokenizer, run_dir=str(run_dir), has_validation=True,
        labels=labels, has_general="general" in datasets,
        deepspeed_config=build_deepspeed_config(config, model_hidden_size(base_model)) if config.train.backend == "deepspeed" else None,
    )
    build_trainer(config, settings, datasets, callbacks=[TuneReportCallback()]).fit()


def _search_algorithm(section: TuneSection, base: dict[str, Any], concurrency: int, num_workers: int, sweep_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The search algorithm (at most `concurrency` trials at once, under the budget) and the
    param_space Tune needs with it. The limit is applied here: Tune's max_concurrent_trials
    applies to neither Tune's random/grid generator nor a wrapped algorithm."""
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if section.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        optuna_search = OptunaSearch(space=OptunaSpace(section, base), metric=section.metric, mode=section.mode, sampler=tpe_sampler(section))
        inner, param_space = SearchGenerator(ConcurrencyLimiter(optuna_search, max_concurrent=concurrency)), {}
    else:
        inner, param_space = BasicVariantGenerator(random_state=section.seed, max_concurrent=concurrency), tune_space(section, base)
    return BudgetedSearch(inner, section.budget, num_workers, sweep_dir), param_space


def tpe_sampler(section: TuneSection) -> Any:
    """Optuna's TPE as the sweep configures it (seed, random start-up trials)."""
    import optuna

    return optuna.samplers.TPESampler(seed=section.seed, n_startup_trials=section.startup_trials)


def trial_cpus(config: ExperimentConfig) -> float:
    """What a trial holds: its own function (1 CPU) plus its Train workers."""
    return 1 + config.scaling.num_workers * config.scaling.cpus_per_worker


def concurrent_trials(config: ExperimentConfig, resources: dict[str, float]) -> int:
    """As many trials as the cluster fits at once, so none waits on resources it cannot get."""
    section = config.tune
    assert section is not None
    if section.max_concurrent_trials is not None:
        return section.max_concurrent_trials
    fits = math.floor(resources.get("CPU", 1) / trial_cpus(config))
    if config.scaling.use_gpu:
        fits = min(fits, math.floor(resources.get("GPU", 0) / config.scaling.num_workers))
    return max(1, fits)


def sweep(
    config: ExperimentConfig | str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    address: str | None = None,
    resume: bool = False,
) -> SweepResult:
    """Search the `tune.space` of the experiment; returns the trial table, the best config (also
    written as an experiment file) and the best checkpoint."""
    started = time.time()
    config = as_config(config, overrides)
    section = config.tune
    if section is None:
        raise ConfigError("tune: the experiment has no tune section (num_samples, metric, space, ...)")
    if config.data.split.val == 0 and not config.data.validation:
        raise ConfigError("data.split.val: a sweep needs a validation split to compare trials on")
    sweep_dir = config.run_dir
    tune_path = sweep_dir / TUNE_DIR
    if tune_path.exists() and not resume:
        raise ConfigError(f"name: {sweep_dir} already holds a sweep; pass --resume to continue it or pick another name")
    resuming = resume and tune.Tuner.can_restore(str(tune_path))
    if resuming:
        config = _as_interrupted(config, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / CONFIG_FILE).write_text(to_yaml(config))

    check_data_paths(config.data)
    base_model = resolve_base_model(config.model, sweep_dir)
    tokenizer_path = tokenizer_source(config.model, base_model)
    load_tokenizer(tokenizer_path, config.model.trust_remote_code)
    general_rows = read_general(config, sweep_dir)  # the forgetting monitor's set, checked before Ray
    ensure_ray(address, trial_cpus(config), dashboard=True)  # Train inside Tune trials needs the dashboard
    if section.batch_size_search is not None and not resuming:  # a resumed sweep keeps the size it found
        found = find_batch_size(config, base_model)
        if found == 0:
            raise ConfigError(f"tune.batch_size_search: not even a batch of 1 fits at data.max_length {config.data.max_length}")
        config = config_from_dict(config.model_dump(mode="json"), [f"train.batch_size={found}"])
        (sweep_dir / CONFIG_FILE).write_text(to_yaml(config))
    prepared = prepare_datasets(config, tokenizer_path, sweep_dir)
    write_report(config, prepared.counts, prepared.facts, sweep_dir)
    datasets = {name: prepared.datasets[name] for name in ("train", "validation") if name in prepared.datasets}
    general = general_dataset(config, general_rows, tokenizer_path)
    if general is not None:
        datasets["general"] = general

    base = config.model_dump(mode="json", exclude={"tune"})
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, base=base, datasets=datasets, base_model=base_model, tokenizer=tokenizer_path,
            trials_dir=str(sweep_dir / TRIALS_DIR), labels=prepared.labels,
        ),
        {"CPU": 1},
    )
    if resuming:
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        (sweep_dir / SCHEDULER_STATE).unlink(missing_ok=True)  # a new sweep learns nothing from an old one's rungs
        concurrency = concurrent_trials(config, ray.cluster_resources())
        search_alg, param_space = _search_algorithm(section, base, concurrency, config.scaling.num_workers, sweep_dir)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=section.metric, mode=section.mode, num_samples=section.num_samples, search_alg=search_alg,
                scheduler=build_scheduler(section.scheduler, sweep_dir / SCHEDULER_STATE),
            ),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir), verbose=1),
        )
    grid = tuner.fit()
    return _finish(config, grid, sweep_dir, started)


def _as_interrupted(config: ExperimentConfig, sweep_dir: Path) -> ExperimentConfig:
    """The config a sweep resumes with must be the one it started with (Tune restores the
    searcher, the space and num_samples as they were; a changed value would silently not apply).
    The batch size a batch-size search settled on is taken over."""
    previous = yaml.safe_load((sweep_dir / CONFIG_FILE).read_text())
    current = config.model_dump(mode="json")
    if config.tune is not None and config.tune.batch_size_search is not None:
        current["train"]["batch_size"] = previous["train"]["batch_size"]
    changed = differing_keys(previous, current)
    if changed:
        raise ConfigError(
            f"{changed[0]}: differs from the interrupted sweep in {sweep_dir} ({', '.join(changed)}); "
            "--resume continues a sweep with its own config: restore it, or start a sweep of another name"
        )
    return config_from_dict(current)


def _finish(config: ExperimentConfig, grid: Any, sweep_dir: Path, started: float) -> SweepResult:
    section = config.tune
    assert section is not None
    budget_stop = BudgetedSearch.fired_at(sweep_dir)
    ledger = BudgetedSearch.saved_ledger(sweep_dir / TUNE_DIR)
    seconds = {trial: ledger.trial_s(trial) for trial in ledger.trials()} if ledger else None
    trials = summarise_trials(grid, section, config.scaling.num_workers, sweep_dir / TRIALS_DIR, seconds)
    finished = [t for t in trials if t.best_metric is not None]
    pick = min if section.mode == "min" else max
    best = pick(finished, key=lambda t: t.best_metric) if finished else None
    best_config = None
    if best is not None:
        best_config = str(sweep_dir / BEST_CONFIG_FILE)
        _write_best_config(config, best.params, Path(best_config))
    result = SweepResult(
        sweep_dir=str(sweep_dir),
        trials=trials,
        best_trial=best.trial_id if best else None,
        best_metric=best.best_metric if best else None,
        best_params=best.params if best else {},
        best_config=best_config,
        best_checkpoint=best.best_checkpoint if best else None,
        wall_time_s=round(time.time() - started, 1),
        worker_hours=round(sum(t.worker_hours for t in trials), 4),
        budget_stop=budget_stop["reason"] if budget_stop else None,
    )
    result.notes = write_sweep_report(result, section, sweep_dir)
    (sweep_dir / SWEEP_JSON).write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    return result


def _write_best_config(config: ExperimentConfig, params: dict[str, Any], path: Path) -> None:
    best = config_from_dict(with_params(config.model_dump(mode="json", exclude={"tune"}), params), [f"name={json.dumps(config.name + '-best')}"])
    raw = best.model_dump(mode="json", exclude={"tune"})
    header = f"# rayft train {path}\n# The best trial of sweep {config.name!r}: {json.dumps(params)}\n"
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False))

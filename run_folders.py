"""Why this file: run folders as evaluate.py and --scores see them (which runs, what setting, finished or not).

A run folder is what train.py writes: config.json (every setting, the labels, the languages, and
"ended" once the run ends), log.csv and the inference artifact prompt.safetensors.
"""
import csv
import json
from pathlib import Path

import xpe
from tables import UsageError, method_name, settings_text

FINISHED = ("steps", "early", "imported")  # the "why" of config.json's ended that make a run finished (imported: a PEFT adapter)


def find_runs(paths, note, runs_root=Path("runs")):
    """Run directories (with an artifact) named, or found anywhere under a named folder."""
    if not paths:
        candidates = sorted(runs_root.glob(f"*/{xpe.ARTIFACT_WEIGHTS}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UsageError(f"no runs under {runs_root}/ to evaluate: train one (python train.py) or pass --runs DIR")
        note(f"evaluating the newest run: {candidates[-1].parent}")
        return [candidates[-1].parent]
    runs = []
    for path in map(Path, paths):
        if (path / xpe.ARTIFACT_CONFIG).is_file() and (path / xpe.ARTIFACT_WEIGHTS).is_file():
            runs.append(path)
        elif path.is_dir() and not (path / xpe.ARTIFACT_CONFIG).is_file():
            found = sorted(p.parent for p in path.rglob(xpe.ARTIFACT_WEIGHTS))  # a grid may nest: runs/<source>/<run>
            if not found:
                raise UsageError(f"{path} is neither a run directory nor a folder of runs (no {xpe.ARTIFACT_WEIGHTS} "
                                 f"in it or below)")
            runs += found
        elif path.is_dir():
            raise UsageError(f"{path} holds no inference artifact ({xpe.ARTIFACT_WEIGHTS} is missing): "
                             f"the run has not reached its first evaluation")
        else:
            raise UsageError(f"{path} does not exist: pass run directories or a folder of runs to --runs")
    return list(dict.fromkeys(runs))


def read_run(run_dir):
    try:
        config = json.loads((run_dir / xpe.ARTIFACT_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{run_dir}/config.json cannot be read as JSON ({e}): not written by train.py") from None
    missing = [k for k in ("model", "labels", "method", "xpe_frac", "max_length", "source", "seed") if k not in config]
    if missing:
        raise UsageError(f"{run_dir}/config.json lacks {', '.join(missing)}: not written by train.py")
    target = config.get("target") or ""
    run = dict(dir=run_dir, config=config, mode="supervised" if target else "zero-shot",
               trained=set(config.get("source_languages", [])) if not target else set(), only=target,
               settings=settings_text(config.get("settings", {})))
    run["ended"] = run_end(run)
    return run


def last_logged_step(run_dir):
    try:
        with open(Path(run_dir) / "log.csv", newline="") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if str(r.get("step", "")).isdigit()]
    except (OSError, KeyError, ValueError):
        return None
    return max(steps, default=None)


def run_end(run):
    """How a run ended: "steps" or "early" (finished), or "unfinished ..." with its step.

    config.json's "ended" says it ({"why": ..., "step": N}; null while the run trains); a config from
    before that key counts as finished iff its log.csv's last step reaches settings.steps.
    """
    config, total = run["config"], run["config"].get("settings", {}).get("steps")
    if "ended" in config:
        ended = config["ended"]
        if isinstance(ended, dict) and ended.get("why") in FINISHED:
            return ended["why"]
        if isinstance(ended, dict):
            return f"unfinished: {ended.get('why')} at step {ended.get('step')}"
        step = last_logged_step(run["dir"])
        return f"unfinished: still training, at step {'?' if step is None else step} of {total}"
    step = last_logged_step(run["dir"])
    if total is None:
        return ""  # nothing says how long it was meant to run
    if step is not None and step >= total:
        return "steps"
    return f"unfinished: log.csv ends at step {'none' if step is None else step} of {total}"


def check_finished(runs, allow):
    """Unfinished runs are refused, naming the run and its step, unless allow (--unfinished)."""
    unfinished = [(run["dir"], run["ended"]) for run in runs if run["ended"].startswith("unfinished")]
    if unfinished and not allow:
        run, why = unfinished[0]
        more = f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise UsageError(f"{run} is {why}{more}: score finished runs, or give --unfinished to score it marked as such")


def targets_of(run, languages):
    """The languages a run is scored on: its own for a target run, else those it was not trained on."""
    if run["only"]:
        return [run["only"]]
    return [lang for lang in languages if lang not in run["trained"]]


def check_runs(runs, languages):
    """One backbone and one label set a call; two runs of one setting and seed on one language are refused."""
    for key, what in (("model", "backbones"), ("labels", "label sets")):
        found = list(dict.fromkeys(json.dumps(r["config"][key]) for r in runs))
        if len(found) > 1:
            raise UsageError(f"runs with different {what} ({', '.join(found[:3])}): evaluate them in separate calls")
    seen = {}
    for run in runs:
        cfg = run["config"]
        key = (cfg["method"], float(cfg["xpe_frac"]), cfg["source"], run["mode"], run["settings"], cfg["seed"])
        for lang in targets_of(run, languages):
            other = seen.setdefault((key, lang), run["dir"])
            if other != run["dir"]:
                raise UsageError(f"{other} and {run['dir']} are both {method_name(*key[:2])} from {key[2]} with seed "
                                 f"{key[5]} and the same settings on {lang}: one would hide the other in the means "
                                 f"over seeds; evaluate them in separate calls, or train one with another --seed")


def preview_rows(runs, languages):
    """One per_language row a run (a made-up accuracy): what --compare and --plot-sort need to know before scoring."""
    return [run_row(run, lang, 1, 0.0) for run in runs for lang in targets_of(run, languages)[:1]]


def run_row(run, lang, n, accuracy):
    cfg = run["config"]
    return dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                source=cfg["source"], seed=cfg["seed"], backbone=cfg["model"],
                steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=accuracy,
                settings=run["settings"], ended=run["ended"])

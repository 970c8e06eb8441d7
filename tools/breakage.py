"""Breakage check of the fast test tier: break each behaviour a user relies on (one line each) and record that the
fast tier catches it.

    python -m tools.breakage                       # every mutation; a table to standard output
    python -m tools.breakage --only resume-rng     # one of them
    python -m tools.breakage --list                # what each mutation breaks

Each mutation replaces one exact line fragment (found exactly once) in a copy of the working tree, then runs the
README's fast test command there with -x (stop at the first failure): first over the test file of the module the
mutation is in (to be quick), and only where that passes over the whole fast tier. A mutation is caught when a test
of the fast tier fails; the first failing test is named. The working tree itself is never touched. The committed
output is docs/breakage.md.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST_TIER = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider"]

# (name, behaviour, file, the fragment as it is, the fragment broken)
MUTATIONS = [
    ("pack-batches", "a packed run trains on its own seed's batches, as alone", "train.py",
     "plans[key, seed] = data.batch_plan(lengths[key], cfg.batch_size, seed, step)",
     "plans[key, seed] = data.batch_plan(lengths[key], cfg.batch_size, live[0].cfg.seed, step)"),
    ("resume-rng", "a killed run resumes identical: the dropout stream continues", "train.py",
     "        torch.set_rng_state(resumed[0].rng_cpu)", "        pass"),
    ("warmup", "the schedule's closed form: linear warm-up", "train.py",
     "return float(step) / float(max(1, warmup))", "return float(step + 1) / float(max(1, warmup))"),
    ("restarts", "the schedule's closed form: cosine with hard restarts", "train.py",
     "math.cos(math.pi * ((float(cfg.cycles) * progress) % 1.0))", "math.cos(math.pi * (float(cfg.cycles) * progress))"),
    ("bias-decay", "no weight decay on biases", "train.py",
     "dict(params=biases, lr=cfg.lr, weight_decay=0.0)", "dict(params=biases, lr=cfg.lr, weight_decay=cfg.weight_decay)"),
    ("spt-rate", "the SPT part trains at --lr-spt", "train.py",
     "dict(params=spt, lr=cfg.lr_spt, weight_decay=0.0)", "dict(params=spt, lr=cfg.lr_prompt, weight_decay=0.0)"),
    ("early-stop", "early stopping counts nothing before --stop-after", "train.py",
     "return int(cfg.stop_after * cfg.steps)", "return 0"),
    ("foreign-folder", "train.py refuses a folder holding files it did not write", "train.py",
     "    if foreign:\n        shown", "    if False:\n        shown"),
    ("prompt-order", "the prompt is [SPT part; XPE part]", "xpe.py",
     "return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]",
     "return torch.cat(parts[::-1], dim=1) if len(parts) > 1 else parts[0]"),
    ("dual-split", "--xpe-frac 0.7 gives 14 XPE + 6 SPT", "xpe.py",
     "n_xpe = min(max(int(prompt_len * r), 1), prompt_len - 1)", "n_xpe = min(max(round(prompt_len * r) + 1, 1), prompt_len - 1)"),
    ("dropout-per-example", "each example draws its own dropout mask in the prompt encoder", "xpe.py",
     "return self.mlp(self.pseudo.unsqueeze(0).expand(batch_size, -1, -1))",
     "return self.mlp(self.pseudo).unsqueeze(0).expand(batch_size, -1, -1)"),
    ("frozen", "the backbone stays frozen", "xpe.py",
     "self.backbone.requires_grad_(False)", "self.backbone.requires_grad_(True)"),
    ("static-dropout", "the static prompt is made with dropout off", "xpe.py",
     "        self.prompt.eval()\n", "        self.prompt.train()\n"),
    ("head-position", "the head reads position 0 (the first prompt vector), as PEFT", "xpe.py",
     "last_hidden_state[:, 0]", "last_hidden_state[:, 1]"),
    ("peft-export", "an exported adapter gives our logits in PEFT (parity)", "tools/peft_adapters.py",
     'weights = {"prompt_embeddings": prompt}', 'weights = {"prompt_embeddings": prompt.flip(0)}'),
    ("interval", "the t-interval over seeds", "evaluate.py",
     "half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)", "half = t_quantile(0.5 + level / 2, n - 1) * sd / n"),
    ("table-cells", "the replication's tables remake byte for byte", "evaluate.py",
     "value = f\"{100 * cell['mean']:.1f}\"", "value = f\"{100 * cell['mean']:.2f}\""),
    ("exit-status", "a user's error is one line and exit 2", "evaluate.py",
     "        print(f\"evaluate.py: error: {e}\", file=sys.stderr)\n        return 2",
     "        print(f\"evaluate.py: error: {e}\", file=sys.stderr)\n        return 1"),
    ("atomic", "a file is written whole or not at all", "xpe.py",
     "os.replace(tmp, path)", "os.rename(tmp, str(path) + '.partial')"),
    ("decoder-position", "a decoder is read at each row's last real token", "xpe.py",
     "mask.sum(1).to(states.device) - 1", "mask.sum(1).to(states.device) - 2"),
    ("decoder-label-rows", "a decoder's label scores come from its LM head's rows of the label tokens", "xpe.py",
     "LabelHead(lm_head.weight.detach()[index]", "LabelHead(lm_head.weight.detach()[index.flip(0)]"),
    ("decoder-peft-export", "a decoder's export gives our label-token logits in PEFT", "tools/peft_adapters.py",
     'weights = {"prompt_embeddings": prompt.detach().float().cpu().contiguous()}',
     'weights = {"prompt_embeddings": prompt.flip(0).detach().float().cpu().contiguous()}'),
    ("range-open-end", "a setting's declared range keeps its open end: a dropout of 1 is refused", "train.py",
     "and (value < self.high if self.high_open else value <= self.high))", "and value <= self.high)"),
    ("config-settings", "config.json's settings are read against their declared ranges", "train.py",
     'for where, prefix in ((config, ""), (settings, "settings.")):', 'for where, prefix in ((config, ""),):'),
    ("row-settings", "a per_language.csv row's settings are read against their declared ranges", "evaluate.py",
     "problem = train.recorded_problem(settings, imported)", "problem = None"),
]


def tree_copy(dest):
    """The working tree as git sees it (tracked and untracked, not ignored), without .git."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def first_failure(output):
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ")[1].split(" - ")[0]
    return ""


def run_one(mutation, timeout):
    name, behaviour, file, before, after = mutation
    with tempfile.TemporaryDirectory(prefix=f"breakage-{name}-") as tmp:
        tmp = Path(tmp)
        tree_copy(tmp)
        text = (tmp / file).read_text()
        if text.count(before) != 1:
            return name, behaviour, "NOT APPLIED", f"{file}: the fragment occurs {text.count(before)} times", 0.0
        (tmp / file).write_text(text.replace(before, after))
        start = time.time()
        own = f"tests/test_{Path(file).stem}.py"
        for where in ([own, "tests"] if (tmp / own).is_file() else ["tests"]):
            try:
                done = subprocess.run(FAST_TIER + [where], cwd=tmp, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return name, behaviour, "TIMED OUT", "", time.time() - start
            if done.returncode != 0:
                return name, behaviour, "caught", first_failure(done.stdout) or f"exit {done.returncode}", \
                    time.time() - start
        return name, behaviour, "SURVIVED", "", time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", help="a mutation's name (may be given again); default: all")
    p.add_argument("--list", action="store_true", help="list the mutations and what each breaks")
    p.add_argument("--timeout", type=int, default=900, help="seconds a mutation's tier may run (default 900)")
    args = p.parse_args(argv)
    names = [m[0] for m in MUTATIONS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        print(f"breakage: error: unknown mutation {', '.join(unknown)}: use some of {', '.join(names)}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTATIONS if not args.only or m[0] in args.only]
    if args.list:
        for name, behaviour, file, *_ in chosen:
            print(f"{name:22} {file:12} {behaviour}")
        return 0
    print("| mutation | behaviour broken | fast tier | first failing test | seconds |")
    print("| --- | --- | --- | --- | --- |")
    survived = 0
    for mutation in chosen:
        name, behaviour, verdict, where, seconds = run_one(mutation, args.timeout)
        survived += verdict != "caught"
        print(f"| {name} | {behaviour} | {verdict} | {where} | {seconds:.0f} |", flush=True)
    print(f"\n{len(chosen) - survived} of {len(chosen)} caught by the fast tier ({' '.join(FAST_TIER[1:])} tests).")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

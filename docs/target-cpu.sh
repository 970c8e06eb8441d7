#!/bin/bash
# What a small Table 3 costs on this CPU: two source runs of e5-small, then one --target call over two
# languages from both (four target runs in one pack), then Table 3. Writes docs/target-cpu.log.
# Run from the repository root with .e5/ (../shared/tools/e5small.py) and SIB-200 in ../shared/sib200.
set -euo pipefail
out=${1:-/tmp/xpe-target-cpu}
rm -rf "$out"
common=(--model .e5 --data-dir ../shared/sib200 --device cpu --batch-size 8 --lr 1e-3)
{
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC') · $(lscpu | sed -n 's/^Model name: *//p') · $(nproc) cores ·" \
       "torch $(python -c 'import torch; print(torch.__version__)') · load $(cut -d' ' -f1-3 /proc/loadavg)"
  set -x
  python train.py "${common[@]}" --source eng_Latn --method dual:0.7 --seed 1-2 --steps 8 --eval-every 8 \
    --out "$out/sources"
  /usr/bin/time -f "target call: %e s wall, %M KB peak resident" \
    python train.py "${common[@]}" --target swh_Latn,kab_Latn --init "$out"/sources/dual0.7-eng_Latn-s{1,2} \
    --steps 16 --eval-every 8 --out "$out/targets"
  python evaluate.py --runs "$out/targets" --data-dir ../shared/sib200 --device cpu --out "$out/results"
  set +x
  cat "$out/results/table3.md"
  python - "$out/targets" <<'PY'
import csv, json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).iterdir()):
    rows = list(csv.DictReader(open(run / "log.csv")))
    settings = json.loads((run / "config.json").read_text())["settings"]
    print(f"{run.name}: {rows[-1]['step']} steps, {rows[-1]['seconds']} s of the pack's training,"
          f" precision {settings.get('precision', 'fp32')}, pack of {len(json.loads((run / 'config.json').read_text())['pack'])}")
PY
} 2>&1 | grep -v -E "it/s\]|s/it\]|it\]$" | tee docs/target-cpu.log

#!/usr/bin/env bash
# Issue 36's small real sweep: XPE at three pseudo-prompt rates x three seeds on e5-small, trained as one call
# (a pack of the three rates per seed, over one backbone pass), scored on lowperf, tabled and drawn by --sweep.
# usage: bash docs/sweep/run.sh   (from the repository root, with .e5 built; about an hour on 2 CPU cores)
#        STAGE=train or STAGE=score bash docs/sweep/run.sh: only the training, or only the scoring of runs/sweep
set -euo pipefail
D=docs/sweep; STAGE=${STAGE:-all}
if [ "$STAGE" != score ]; then
lscpu > $D/lscpu.txt
/usr/bin/time -v -o $D/train-time.log python train.py --model .e5 --data-dir ../shared/sib200 --source joshi5 \
  --method xpe --lr-prompt 5e-3,5e-4,5e-5 --seed 1-3 --steps 200 --batch-size 16 --lr 1e-3 --eval-every 100 \
  --out runs/sweep --device cpu --precision fp32 2>&1 | tr '\r' '\n' | grep -v 'it/s[],]\|s/it[],]' > $D/train.log
fi
[ "$STAGE" = train ] && exit 0
lscpu > $D/lscpu-score.txt
/usr/bin/time -v -o $D/evaluate-time.log python evaluate.py --runs runs/sweep --data-dir ../shared/sib200 \
  --group lowperf --sweep lr_prompt --sweep-plot $D/sweep.png --plot-size 1200x700 --out $D/scores --device cpu \
  --precision fp32 2>&1 | tr '\r' '\n' | grep -v 'it/s[],]\|s/it[],]' > $D/evaluate.log

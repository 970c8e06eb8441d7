#!/usr/bin/env bash
# dual:0.3, the method the claims do not need, for more seeds than 1 and 2 (issue 20: "if the time allows"): one run a seed, one after another, fp32, scored on all-wo-j5.
# usage: bash docs/replication/dual03.sh FIRST-LAST [--resume or --overwrite]   (from the repository root, with .e5 built; then commit docs/replication)
#        STAGE=train or STAGE=score as in seed.sh
set -euo pipefail
[[ ${1:-} =~ ^([0-9]+)-([0-9]+)$ ]] && (( BASH_REMATCH[1] <= BASH_REMATCH[2] )) ||
  { echo "dual03.sh: give the seeds as FIRST-LAST, FIRST <= LAST, e.g. bash docs/replication/dual03.sh 8-10" >&2; exit 2; }
list=$(seq ${BASH_REMATCH[1]} ${BASH_REMATCH[2]})
seeds=$1; shift
D=docs/replication; R=$D/runs; O=$D/dual0.3-s$seeds; STAGE=${STAGE:-all}
mkdir -p $O
machine() { lscpu; echo "transparent_hugepage: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"; }
if [ "$STAGE" != score ]; then
machine > $O/lscpu.txt
/usr/bin/time -v -o $O/train-time.log python train.py --model .e5 --data-dir ../shared/sib200 --source joshi5 \
  --method dual:0.3 --seed $seeds --steps 616 --lr 1e-3 --out runs/replication --device cpu --precision fp32 "$@" \
  > $O/train.raw 2>&1
tr '\r' '\n' < $O/train.raw | grep -v 'it/s\]$\|s/it\]$' > $O/train.log || true
for s in $list; do
  mkdir -p $R/dual0.3-joshi5-s$s
  cp runs/replication/dual0.3-joshi5-s$s/{config.json,log.csv,prompt.safetensors} $R/dual0.3-joshi5-s$s/
done
rm $O/train.raw
fi
[ "$STAGE" = train ] && { echo "dual:0.3 seeds $seeds trained"; exit 0; }
machine > $O/lscpu-score.txt
/usr/bin/time -v -o $O/evaluate-time.log python evaluate.py --runs $(for s in $list; do echo $R/dual0.3-joshi5-s$s; done) \
  --data-dir ../shared/sib200 --group all-wo-j5 --out $O/scores --device cpu --precision fp32 > $O/evaluate.raw 2>&1
tr '\r' '\n' < $O/evaluate.raw | grep -v 'it/s\]$\|s/it\]$' > $O/evaluate.log || true
rm $O/evaluate.raw
echo "dual:0.3 seeds $seeds done"

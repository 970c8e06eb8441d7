#!/usr/bin/env bash
# One replication seed (issue 20): the three claim methods packed, fp32 on the CPU as seeds 1-2, artifacts copied, scored on all-wo-j5.
# usage: bash docs/replication/seed.sh SEED [--resume]   (from the repository root, with .e5 built; then commit docs/replication)
#        STAGE=train or STAGE=score bash docs/replication/seed.sh SEED: only the training (and the artifacts' copy) or only
#        the scoring of the committed artifacts, for a session with time for one of them (default: both)
set -euo pipefail
[[ ${1:-} =~ ^[0-9]+$ ]] || { echo "seed.sh: give one seed, e.g. bash docs/replication/seed.sh 11" >&2; exit 2; }
s=$1; shift
D=docs/replication; R=$D/runs; STAGE=${STAGE:-all}
mkdir -p $D/seed$s
# the huge-page setting moves a CPU's speed here (large fresh buffers fault in page by page), so it is kept too
machine() { lscpu; echo "transparent_hugepage: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"; }
if [ "$STAGE" != score ]; then
machine > $D/seed$s/lscpu.txt  # the machine, beside its times
/usr/bin/time -v -o $D/seed$s/train-time.log python train.py --model .e5 --data-dir ../shared/sib200 --source joshi5 \
  --method spt,dual:0.7,xpe --seed $s --steps 616 --lr 1e-3 --out runs/replication --device cpu --precision fp32 "$@" \
  > $D/seed$s/train.raw 2>&1
tr '\r' '\n' < $D/seed$s/train.raw | grep -v 'it/s\]$\|s/it\]$' > $D/seed$s/train.log || true
for m in spt dual0.7 xpe; do
  mkdir -p $R/$m-joshi5-s$s
  cp runs/replication/$m-joshi5-s$s/{config.json,log.csv,prompt.safetensors} $R/$m-joshi5-s$s/
done
rm $D/seed$s/train.raw
fi
[ "$STAGE" = train ] && { echo "seed $s trained"; exit 0; }
machine > $D/seed$s/lscpu-score.txt
/usr/bin/time -v -o $D/seed$s/evaluate-time.log python evaluate.py --runs $R/spt-joshi5-s$s $R/dual0.7-joshi5-s$s \
  $R/xpe-joshi5-s$s --data-dir ../shared/sib200 --group all-wo-j5 --out $D/seed$s/scores --device cpu --precision fp32 > $D/seed$s/evaluate.raw 2>&1
tr '\r' '\n' < $D/seed$s/evaluate.raw | grep -v 'it/s\]$\|s/it\]$' > $D/seed$s/evaluate.log || true
rm $D/seed$s/evaluate.raw
echo "seed $s done"

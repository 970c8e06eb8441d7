#!/usr/bin/env bash
# The sweep's table and figure, and the paired comparison of its best rate with the others, from the committed scores in seconds.
# usage: bash docs/sweep/tables.sh   (from the repository root, after docs/sweep/run.sh)
set -euo pipefail
D=docs/sweep
python evaluate.py --scores $D/scores/per_language.csv --group lowperf --sweep lr_prompt --sweep-plot $D/sweep.png \
  --plot-size 1200x700 --compare "xpe lr_prompt=0.0005","xpe lr_prompt=0.005" \
  --compare "xpe lr_prompt=0.0005","xpe lr_prompt=5e-05" --out $D/tables > $D/tables.log 2>&1 || { cat $D/tables.log; exit 1; }
cat $D/tables/sweep.md

#!/usr/bin/env bash
# The replication's tables, Figure 2, paired differences and claims (claims.csv: the effects others reported) from every committed per_language.csv, in seconds (issue 20).
# usage: bash docs/replication/tables.sh   (from the repository root; remake after each seed's scores are committed)
set -euo pipefail
D=docs/replication
python evaluate.py --scores $D/part1/per_language.csv $D/part2/per_language.csv $D/part3/per_language.csv \
  $(ls -v $D/seed*/scores/per_language.csv $D/dual0.3-s*/scores/per_language.csv 2>/dev/null) \
  --baseline --compare xpe,spt --compare dual:0.7,spt --margin 1,1.3,2.03,3.1 --claims $D/claims.csv --plot $D/figure2.png --plot-sort dual:0.7 --out $D \
  > $D/evaluate.log 2>&1 || { cat $D/evaluate.log; exit 1; }
python $D/claims.py --fill README.md $D/README.md
cat $D/decisions.md

#!/usr/bin/env bash
# The training curves of the replication's 37 committed runs (docs/replication/runs/: SPT, DUAL 0.3, DUAL 0.7 and
# XPE from joshi5 on e5-small) from their log.csv alone, in seconds: nothing is scored or trained.
set -euo pipefail
cd "$(dirname "$0")/../.."
python evaluate.py --runs docs/replication/runs --curves docs/curves/replication.png --plot-size 1800x700

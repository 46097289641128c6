#!/usr/bin/env bash
# Regenerates results/*.json and docs/RESULTS.md: every `pinner experiment` run behind the
# published tables, in two parallel streams with one torch thread each (on a 2-core machine that
# beats two threads fighting over both cores):
#   1. the synthetic world (paper protocol), then MovieLens leave-one-out;
#   2. Taobao (both protocols), then MovieLens paper protocol.
# Usage: scripts/reproduce_results.sh   (PINNER_DATASETS_DIR, default ../shared/datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
PINNER=${PINNER:-.venv/bin/pinner}
D=${PINNER_DATASETS_DIR:-../shared/datasets}
ML=$D/movielens-latest-small
TB=$D/taobao-userbehavior-sample
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p results

timed() {
  local start=$SECONDS
  "$@"
  echo "[$((SECONDS - start)) s] $*"
}

synthetic_and_movielens_loo() {
  timed $PINNER experiment --source synthetic --protocol paper \
    --tables objectives,inference,bce,negatives,multitask,features,pin_ids \
    --steps 200 --seeds 0,1 --out results/synthetic_paper.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables objectives,bce --steps 150 --seeds 0,1 --out results/movielens_loo.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables negatives,features --steps 150 --out results/movielens_loo_ablations.json
}

taobao_and_movielens_paper() {
  timed $PINNER experiment --source taobao --path "$TB" --protocol leave_one_out \
    --tables objectives,bce,pin_ids --steps 300 --seeds 0,1 \
    --pin-id-buckets 65536 --item-engagement all --out results/taobao_loo.json
  timed $PINNER experiment --source taobao --path "$TB" --protocol paper \
    --tables objectives,inference,multitask --steps 300 \
    --pin-id-buckets 65536 --item-engagement all --out results/taobao_paper.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol paper \
    --tables objectives --steps 100 --out results/movielens_paper.json
  timed $PINNER experiment --source taobao --path "$TB" --protocol leave_one_out \
    --tables negatives,features --steps 300 \
    --pin-id-buckets 65536 --item-engagement all --out results/taobao_loo_ablations.json
}

begin=$SECONDS
synthetic_and_movielens_loo > results/stream1.log 2>&1 &
first=$!
taobao_and_movielens_paper > results/stream2.log 2>&1 &
second=$!
wait $first
wait $second
$PINNER results results/*.json --out docs/RESULTS.md --notes docs/RESULTS_NOTES.md
echo "all experiments in $((SECONDS - begin)) s"

#!/usr/bin/env bash
# Regenerates results/*.json and docs/RESULTS.md: every `pinner experiment` run behind the
# published tables, in two parallel streams (synthetic world + MovieLens leave-one-out | Taobao + MovieLens paper), one torch thread
# each — on a 2-core machine that beats two threads fighting over both cores.
# Usage: scripts/reproduce_results.sh   (PINNER_DATASETS_DIR, default ../shared/datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
PINNER=${PINNER:-.venv/bin/pinner}
D=${PINNER_DATASETS_DIR:-../shared/datasets}
ML=$D/movielens-latest-small
TB=$D/taobao-userbehavior-sample
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p results

timed() { local t0=$SECONDS; "$@"; echo "[$((SECONDS - t0)) s] $*"; }

synthetic_and_movielens() {
  timed $PINNER experiment --source synthetic --protocol paper \
    --tables objectives,inference,bce,negatives,multitask,features,pin_ids \
    --steps 200 --seeds 0,1 --out results/synthetic_paper.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables objectives,bce --steps 150 --seeds 0,1 --out results/movielens_loo.json
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
}

t0=$SECONDS; "$@"; echo "[$((SECONDS - t0)) s] $*"; }

synthetic_and_movielens() {
  timed $PINNER experiment --source synthetic --protocol paper \
    --tables objectives,inference,bce --steps 300 --seeds 0,1,2 \
    --out results/synthetic_paper.json
  timed $PINNER experiment --source synthetic --protocol paper \
    --tables negatives,features,multitask,pin_ids --steps 150 \
    --out results/synthetic_paper_ablations.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables objectives,bce --steps 300 --seeds 0,1 \
    --out results/movielens_loo.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol paper \
    --tables objectives --steps 300 \
    --out results/movielens_paper.json
}

taobao() {
  timed $PINNER experiment --source taobao --path "$TB" --protocol leave_one_out \
    --tables objectives,bce,pin_ids --steps 500 --seeds 0,1 --pin-id-buckets 65536 --item-engagement all \
    --out results/taobao_loo.json
  timed $PINNER experiment --source taobao --path "$TB" --protocol paper \
    --tables objectives,inference,multitask --steps 500 --pin-id-buckets 65536 --item-engagement all \
    --out results/taobao_paper.json
}

t0=$SECONDS
synthetic_and_movielens > results/synthetic_and_movielens.log 2>&1 &
s=$!
taobao_and_movielens_paper > results/taobao_and_movielens_paper.log 2>&1 &
p=$!
wait $s
wait $p
$PINNER results results/*.json --out docs/RESULTS.md --notes docs/RESULTS_NOTES.md
echo "all experiments in $((SECONDS - t0)) s"

#!/usr/bin/env bash
# Regenerates results/current/*.json, then docs/RESULTS.md, results/INDEX.md and the README's
# headline (`pinner results`): every `pinner experiment` run behind the published tables, in two
# parallel streams with one torch thread each (on a 2-core machine that beats two threads
# fighting over both cores). Each command is the one recorded in its file. Every model trains
# against a validation split (early stopping, best weights restored) within --max-minutes per
# variant and seed; each file records where its runs stopped and why. The files under
# results/archive/ (earlier recipes and probes) are not rerun: results/INDEX.md lists the command
# of each.
#   stream 1: MovieLens latest-small, leave-one-out (the default PinnerFormer, then the
#             reference SASRecs); the Taobao sample, leave-one-out (PinnerFormer and the
#             cross-entropy SASRec in one file) and the paper protocol;
#   stream 2: Amazon Sports, leave-one-out (PinnerFormer; the cross-entropy SASRec; the BCE
#             SASRec, far behind it there, with one seed), then its paper protocol.
# The *_latest runs ask for bf16 autocast on the CPU (`--amp on`) as they were recorded; on a CPU
# without bf16 matrix units (AVX2 only, where bf16 is several times slower than fp32) training
# falls back to fp32 with a warning (`model_core.training.config.amp_dtype`), and each row
# records whether it ran in bf16.
# Usage: scripts/reproduce_results.sh   (PINNER_DATASETS_DIR, default ../shared/datasets; AMP,
#        default on)
set -euo pipefail
cd "$(dirname "$0")/.."
PINNER=${PINNER:-.venv/bin/pinner}
D=${PINNER_DATASETS_DIR:-../shared/datasets}
ML=$D/movielens-latest-small
TB=$D/taobao-userbehavior-sample/UserBehavior_sample.csv
AZ=$D/amazon-sports-5core
AMP=${AMP:-on}
OUT=results/current
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p $OUT

timed() {
  local start=$SECONDS
  "$@"
  echo "[$((SECONDS - start)) s] $*"
}

DEFAULT=(--item-ids auto --item-tokens validated --item-graph auto --latest-pin auto
  --ema-epochs 1.8 --amp "$AMP" --item-engagement all --negatives auto --windows auto)

latest() {  # leave-one-out, the default recipe (a later --tables replaces "objectives")
  timed $PINNER experiment --protocol leave_one_out --tables objectives --seeds 0,1,2 \
    "${DEFAULT[@]}" "$@"
}

paper() {  # the paper's 14-day protocol on 4 pooled windows after the training cut: Table 3's
  # two objectives and Table 2 (once / daily / realtime), 3 seeds, 3 minutes a seed (a later
  # --max-minutes replaces it)
  timed $PINNER experiment --protocol paper --tables objectives,inference \
    --seeded-tables objectives,inference,peers --variants dense_all_action,sasrec \
    --seeds 0,1,2 --eval-windows 4 --max-minutes 3 "${DEFAULT[@]}" "$@"
}

stream1() {
  latest --source movielens --path "$ML" --variants sasrec --max-minutes 12 --patience 10 \
    --out $OUT/movielens_loo_latest.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables peers --variants sasrec_ce --seeds 0,1,2 --max-minutes 25 --patience 10 \
    --out $OUT/movielens_loo_ce.json
  timed $PINNER experiment --source movielens --path "$ML" --protocol leave_one_out \
    --tables peers --variants sasrec_reference --seeds 0,1,2 --max-minutes 12 --patience 10 \
    --out $OUT/movielens_loo_bce.json
  latest --source taobao --path "$TB" --tables objectives,peers \
    --variants dense_all_action,sasrec_ce --max-minutes 4 --out $OUT/taobao_loo.json
  paper --source taobao --path "$TB" --out $OUT/taobao_paper.json
}

stream2() {
  latest --source amazon --path "$AZ" --variants sasrec --max-minutes 12 \
    --out $OUT/amazon_loo_latest.json
  timed $PINNER experiment --source amazon --path "$AZ" --protocol leave_one_out \
    --tables peers --variants sasrec_ce --seeds 0,1,2 --max-minutes 25 \
    --out $OUT/amazon_loo_ce.json
  timed $PINNER experiment --source amazon --path "$AZ" --protocol leave_one_out \
    --tables peers --variants sasrec_reference --seeds 0 --max-minutes 6 \
    --out $OUT/amazon_loo_bce.json
  paper --source amazon --path "$AZ" --remove-seen --max-minutes 4 --out $OUT/amazon_paper.json
}

begin=$SECONDS
stream1 > results/stream1.log 2>&1 &
first=$!
stream2 > results/stream2.log 2>&1 &
second=$!
wait $first
wait $second
$PINNER results
echo "all experiments in $((SECONDS - begin)) s"

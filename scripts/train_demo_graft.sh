#!/usr/bin/env bash
# The last part of the jvlm-demo recipe (docs/decisions.md, "Dense vision pretraining for
# the demo model"): pretrain a vision side on per-patch character and shape labels, graft
# it onto a trained jvlm-demo, train two more stages, graft the pretrained vision side once
# more (stage 2 wears its reading away), train the decoder alone for a long third stage and a
# fourth that continues it, then seven more (5: chart and table key-value read-outs; 6 to
# 10: a reading block before each chart and table answer; 11: a facts answer after the
# word it follows from; 12: facts also asked in training-only rewordings), and score the
# result in runs/demo/eval_graft. scripts/train_demo.sh calls it with
# DECODER=runs/demo/stage2b/final and then ships the result; on its own it ships nothing.
#
#   DECODER=runs/demo/stage2b/final bash scripts/train_demo_graft.sh
#   bash scripts/train_demo_graft.sh                 # grafts onto the packaged jvlm-demo
#
# About 13.2 hours on 2 idle CPU cores after the data exists (python -m jvlm_demo data
# --out runs/demo/data; the stage 2 and stage 2b sets and the test split are used).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/demo  # the paths in examples/train/demo_graft_stage*.yaml point here
DECODER=${DECODER:-src/jvlm/assets/jvlm-demo}
for stage in 1 2 3 4 5 6 7 8 9 10 11 12; do
  if [ -d "$RUN/graft_stage$stage/checkpoints" ]; then
    echo "$RUN already holds a graft run; move it away first" >&2
    exit 2
  fi
done
for set in stage2 stage2b_docs stage2b_read stage5 stage5_lookup stage5_pairs stage6 stage6_lookup stage7 stage7_lookup stage8 stage8_lookup stage8_drill stage9 stage9_lookup stage9_drill stage10 stage10_lookup stage10_drill stage10_tables stage11 stage11_facts stage12 stage12_facts test; do
  [ -f "$RUN/data/$set/data.jsonl" ] || { echo "missing $RUN/data/$set: run python -m jvlm_demo data --out $RUN/data" >&2; exit 2; }
done

[ -d "$RUN/init" ] || python -m jvlm_demo init --out "$RUN/init"
python -m jvlm_demo vision --level patch --model "$RUN/init" --out "$RUN/vision"
python -m jvlm_demo vision --level token --steps 1000 --model "$RUN/vision" --out "$RUN/vision_tok"
python -m jvlm_demo graft --decoder "$DECODER" --vision "$RUN/vision_tok" --out "$RUN/grafted"
jvlm train examples/train/demo_graft_stage1.yaml --no-progress
jvlm train examples/train/demo_graft_stage2.yaml --no-progress
python -m jvlm_demo graft --decoder "$RUN/graft_stage2/final" --vision "$RUN/vision_tok" --out "$RUN/regrafted"
jvlm train examples/train/demo_graft_stage3.yaml --no-progress
jvlm train examples/train/demo_graft_stage4.yaml --no-progress
jvlm train examples/train/demo_graft_stage5.yaml --no-progress
jvlm train examples/train/demo_graft_stage6.yaml --no-progress
jvlm train examples/train/demo_graft_stage7.yaml --no-progress
jvlm train examples/train/demo_graft_stage8.yaml --no-progress
jvlm train examples/train/demo_graft_stage9.yaml --no-progress
jvlm train examples/train/demo_graft_stage10.yaml --no-progress
jvlm train examples/train/demo_graft_stage11.yaml --no-progress
jvlm train examples/train/demo_graft_stage12.yaml --no-progress
python -m jvlm_demo.eval_task --model "$RUN/graft_stage12/final" --data "$RUN/data/test" --out "$RUN/eval_graft"

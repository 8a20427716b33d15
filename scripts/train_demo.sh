#!/usr/bin/env bash
# Regenerate the synthetic data and retrain the shipped default model jvlm-demo end to end,
# then score it on the held-out test split and copy it into src/jvlm/assets/jvlm-demo.
#
#   bash scripts/train_demo.sh      # everything, about 15.5 hours on 2 idle CPU cores; writes under runs/demo
#
# The shipped weights' lineage: a model trained from random weights (stages 1, 2, 2b) gives
# the decoder; a vision side pretrained on per-patch character and shape labels replaces
# its own (scripts/train_demo_graft.sh), two more stages train the whole, and a third trains
# the decoder alone on the pretrained vision side, grafted once more; a fourth continues it,
# a fifth adds chart and table read-outs, a sixth answers chart and table questions
# after reading the image out in a reasoning block, a seventh stops a value reading at
# the asked line, an eighth opens each reading with its goal, reads receipts too and
# drills the reading on text, a ninth writes every label the way its line starts, a tenth
# finds a table cell by its row, then its column, an eleventh answers a facts question
# after writing the one word its answer follows from, and a twelfth asks the facts in
# more sentences, so that the word, not the sentence, decides the answer.
#
# Needs the demo recipe (recipes/jvlm_demo; bash scripts/install.sh --test installs it) and the
# fonts of scripts/install_fonts.sh. Deterministic data and tokenizer; the weights
# match the shipped ones only up to CPU thread scheduling.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/demo  # the paths in examples/train/demo_stage*.yaml point here
if [ -d "$RUN/stage1/checkpoints" ] || [ -d "$RUN/stage2/checkpoints" ] || [ -d "$RUN/stage2b/checkpoints" ]; then
  echo "$RUN already holds a training run; move it away first" >&2
  exit 2
fi

python -m jvlm_demo data --out "$RUN/data"
python -m jvlm_demo init --out "$RUN/init"
jvlm train examples/train/demo_stage1.yaml --no-progress
jvlm train examples/train/demo_stage2.yaml --no-progress
python -m jvlm_demo rescale --model "$RUN/stage2/final" --out "$RUN/stage2_rescaled"
jvlm train examples/train/demo_stage2b.yaml --no-progress
DECODER="$RUN/stage2b/final" bash scripts/train_demo_graft.sh   # vision pretraining, graft, 12 stages, eval
python -m jvlm_demo ship --model "$RUN/graft_stage12/final" --eval "$RUN/eval_graft" --out src/jvlm/assets/jvlm-demo

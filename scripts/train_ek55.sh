#!/usr/bin/env bash
# The reference RU-LSTM recipe on EK55: for each modality, sequence-completion pre-training then
# anticipation fine-tuning from its best checkpoint; then MATT fusion from the three branch bests.
# Features are read from data/ek55/{rgb,flow,obj}.h5 and runs land in runs/ek55/.
# Extra arguments are passed to every stage, e.g.  scripts/train_ek55.sh --trainer.devices 2
# A stage folder holding an earlier run's checkpoints is refused: rerun with
#   scripts/train_ek55.sh --overwrite true
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}"
for modality in rgb flow obj; do
  rulstm fit -c configs/ek55/base.yaml -c configs/ek55/${modality}_sc.yaml "$@"
  rulstm fit -c configs/ek55/base.yaml -c configs/ek55/${modality}_anticipation.yaml "$@"
done
rulstm fit -c configs/ek55/base.yaml -c configs/ek55/fusion.yaml "$@"

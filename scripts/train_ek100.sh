#!/usr/bin/env bash
# The reference RU-LSTM recipe on EK100: for each modality, sequence-completion pre-training then
# anticipation fine-tuning from its best checkpoint; then MATT fusion from the three branch bests.
# Features are read from data/ek100/{rgb,flow,obj}.h5 and runs land in runs/ek100/.
# Extra arguments are passed to every stage, e.g.  scripts/train_ek100.sh --trainer.devices 2
# A stage folder holding an earlier run's checkpoints is refused: rerun with
#   scripts/train_ek100.sh --overwrite true
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}"
for modality in rgb flow obj; do
  rulstm fit -c configs/ek100/base.yaml -c configs/ek100/${modality}_sc.yaml "$@"
  rulstm fit -c configs/ek100/base.yaml -c configs/ek100/${modality}_anticipation.yaml "$@"
done
rulstm fit -c configs/ek100/base.yaml -c configs/ek100/fusion.yaml "$@"

"""Pure ``nn.Module`` models: RU-LSTM branches, their fusion and baselines."""

from rulstm.models.baselines import (
    AttentiveProbe,
    LSTMBaseline,
    TCNBaseline,
    TransformerBaseline,
)
from rulstm.models.rulstm import RULSTM, RULSTMFusion

__all__ = [
    "RULSTM",
    "AttentiveProbe",
    "LSTMBaseline",
    "RULSTMFusion",
    "TCNBaseline",
    "TransformerBaseline",
]

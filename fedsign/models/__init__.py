"""FedSign models by name (imports nothing else of the project).

Every model: ``forward(x, return_features=False)`` -> logits or ``(logits, features)``;
``model.classifier`` is the final ``nn.Linear``; ``model.feature_dim`` its input size;
optional ``model.projection`` (MOON head); every activation is its own ``nn.ReLU()``.
"""

from .common import (BN_WEIGHT_INITS, INITS, FedSignNet, ModelConfigError, float_state, hand_over_float_state,
                     initialize)
from .registry import DEFAULT_INIT, MODEL_NAMES, build_model, check_model_input, resolve_init

__all__ = [
    "BN_WEIGHT_INITS",
    "DEFAULT_INIT",
    "INITS",
    "FedSignNet",
    "MODEL_NAMES",
    "ModelConfigError",
    "build_model",
    "check_model_input",
    "float_state",
    "hand_over_float_state",
    "initialize",
    "resolve_init",
]

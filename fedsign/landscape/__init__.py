"""Loss-landscape analyses of the paper (§3-§6.1, Appendices A.3, B, D): pure functions over
``{name: tensor}`` dicts that know nothing of federated learning.

Every analysis takes any ``nn.Module`` and its data as an ``EvalData``, a ``DataLoader``, a
``Dataset`` or an ``(x, y)`` tensor pair. directions (noises, sign-consistent and special
directions, NS / Filter-NS), groups (which parameters get noise, for any model), evaluate (batched
evaluation with a BN policy), curves (valleys, ratio sweeps, interpolation), soups, variants
(training through ``fedsign.training.train_local``), theory (Appendix D demos and closed forms),
hessian (Hutchinson), activations (Fig. 28), signs (sign consistency), plots and records. The
``fedsign landscape`` CLI is in ``cli``.
"""

from .curves import asymmetry, group_stats, interpolation, lambda_grid, ratio_sweep, valley_curves
from .directions import (COMMON_NOISES, DIRECTION_SETS, FILTER_1D, NORMALIZATIONS, SPECIAL_DIRECTIONS,
                         DirectionError, difference, make_direction, make_directions, normalize, perturb, ratio_noise,
                         sign_replaced, special_direction)
from .evaluate import (BN_POLICIES, DataError, EvalData, Evaluation, Line, LoaderData, NonFiniteError, PolicyError,
                       as_eval_data, check_finite, evaluate_lines, evaluate_point, model_state, point_buffers,
                       prepare_data, split_state)
from .errors import LandscapeError
from .groups import GROUP_NAMES, ROLES, GroupError, parameter_roles, select_parameters
from .signs import sign_consistency

__all__ = [
    "BN_POLICIES", "COMMON_NOISES", "DIRECTION_SETS", "DataError", "DirectionError", "EvalData", "Evaluation",
    "FILTER_1D", "GROUP_NAMES", "GroupError", "LandscapeError", "Line", "LoaderData", "NORMALIZATIONS", "NonFiniteError",
    "PolicyError", "ROLES", "SPECIAL_DIRECTIONS", "as_eval_data", "asymmetry", "check_finite", "difference",
    "evaluate_lines", "evaluate_point", "group_stats", "interpolation", "lambda_grid", "make_direction",
    "make_directions", "model_state", "normalize", "parameter_roles", "perturb", "point_buffers", "prepare_data",
    "ratio_noise", "ratio_sweep", "select_parameters", "sign_consistency", "sign_replaced", "special_direction",
    "split_state", "valley_curves",
]

"""Appendix D: the softmax-regression demo on sklearn digits (Listing 2, Fig. 29) and the ReLU
simulation (Listing 1, Fig. 27), with the closed forms of softmax regression.

For ``P = softmax(X W^T)`` (rows p_n) and a direction ``V`` (C x D), with
``A_n = diag(p_n) - p_n p_n^T``, the Hessian of the mean CE is ``H = E_n[A_n (x) x_n x_n^T]``, so

* ``tr H = E_n[||x_n||^2 * sum_k p_nk (1 - p_nk)]`` (:func:`softmax_hessian_trace`),
* ``vec(V)^T H vec(V) = E_n[z_n^T A_n z_n]`` with ``z_n = V x_n`` (:func:`softmax_hessian_quadratic`),

which equal Listing 2's explicit ``CD x CD`` Hessian without building it.
"""

from __future__ import annotations

import numpy as np

DIGITS_METRICS = ("error", "loss", "trace_hessian", "gini", "first_order_text", "second_order_text",
                  "first_order_listing", "second_order_listing")
COEFFICIENT_LABELS = {  # Fig. 29's coefficient panels: the paper's text and its Listing 2 define them differently
    "first_order_text": "εᵀg (text)", "second_order_text": "εᵀHε (text)",
    "first_order_listing": "Wnᵀg (Listing 2)", "second_order_listing": "WnᵀHWn (Listing 2)",
}


def softmax_probs(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(X @ W.T, axis=1)


def clipped_log_loss(Y: np.ndarray, P: np.ndarray) -> float:
    """``sklearn.metrics.log_loss(Y, P)`` for labels 0..C-1 present in Y: the mean of
    ``-log(clip(p_y, eps, 1 - eps))`` with eps the dtype's machine epsilon (without its ~25 ms of
    input validation per call)."""
    eps = np.finfo(P.dtype).eps
    return float(np.mean(-np.log(np.clip(P[np.arange(len(Y)), Y], eps, 1 - eps))))


def softmax_gradient(X: np.ndarray, Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Gradient of the mean CE w.r.t. W (C x D): ``-(onehot(Y) - P)^T X / N``."""
    onehot = np.eye(P.shape[1])[Y]
    return -((onehot - P).T @ X) / len(X)


def softmax_hessian(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The explicit ``CD x CD`` Hessian of the mean CE, laid out as ``vec(W)`` (row-major W)."""
    n, d = X.shape
    c = P.shape[1]
    A = P[:, None, :] * (np.eye(c)[None] - P[:, :, None])  # A[n, i, j] = p_j (delta_ij - p_i)
    XX = (X[:, :, None] * X[:, None, :]).reshape(n, d * d)
    H = (A.reshape(n, c * c).T @ XX / n).reshape(c, c, d, d).transpose(0, 2, 1, 3)
    return H.reshape(c * d, c * d)


def softmax_hessian_trace(X: np.ndarray, P: np.ndarray) -> float:
    """``tr H = E_x[||x||^2 * sum_k p_k (1 - p_k)]``."""
    return float(np.mean((X ** 2).sum(1) * (P * (1 - P)).sum(1)))


def softmax_hessian_quadratic(X: np.ndarray, P: np.ndarray, V: np.ndarray) -> float:
    """``vec(V)^T H vec(V) = E_n[sum_k p_k z_k^2 - (sum_k p_k z_k)^2]`` with ``z = V x_n``."""
    Z = X @ V.T
    return float(np.mean((P * Z * Z).sum(1) - (P * Z).sum(1) ** 2))


def digits_softmax() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Listing 2's model: ``LogisticRegression(max_iter=500, fit_intercept=False)`` on the raw digits
    (all 1,797 images, pixels 0..16). Returns ``(W, X, Y)``.

    BLAS runs single-threaded: the fit is then deterministic and fast on a busy machine (lbfgs
    stops at its tolerance, so thread counts change W only within that tolerance).
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, Y = load_digits(return_X_y=True)
    with threadpool_limits(1):
        W = LogisticRegression(max_iter=500, fit_intercept=False).fit(X, Y).coef_
    return W, X, Y


def softmax_metrics(W: np.ndarray, X: np.ndarray, Y: np.ndarray, noise: np.ndarray,
                    lambdas: np.ndarray) -> np.ndarray:
    """Listing 2's loop body for one noise: rows per lambda of :data:`DIGITS_METRICS`.

    At ``Wn = W + lambda * noise`` (raw, unnormalized noise): error and log loss (:func:`clipped_log_loss`) on (X, Y),
    ``tr H``, ``gini = E_n[sum_k p_k (1 - p_k)]``, and the first/second-order coefficients with the gradient
    g and Hessian H at Wn, in both definitions the paper gives: the text's ``eps^T g`` and
    ``eps^T H eps`` (contracted with the noise: the slope and curvature of the curve along eps) and
    Listing 2's ``Wn^T g`` and ``Wn^T H Wn`` (contracted with Wn, although its plot titles say n^T g, n^T H n).
    """
    rows = []
    for lam in lambdas:
        Wn = W + lam * noise
        P = softmax_probs(X, Wn)
        g = softmax_gradient(X, Y, P)
        rows.append([
            float(np.mean(np.argmax(P, axis=1) != Y)),
            clipped_log_loss(Y, P),
            softmax_hessian_trace(X, P),
            float(np.sum(P * (1 - P), axis=1).mean()),
            float(np.sum(g * noise)),
            softmax_hessian_quadratic(X, P, noise),
            float(np.sum(g * Wn)),
            softmax_hessian_quadratic(X, P, Wn),
        ])
    return np.array(rows)


def digits_demo(seed: int = 0, draws: int = 10, points: int = 21) -> tuple[dict, dict[str, np.ndarray]]:
    """Listing 2 for Gaussian and sign-consistent noise, averaged over ``draws`` noise draws.

    Draw k is the k-th ``randn(C, D)`` of ``np.random.RandomState(seed)``, so ``draws=1`` is exactly
    the listing after ``np.random.seed(seed)``; the sign-consistent noise is
    ``|noise| * (2 * (W > 0) - 1)`` (a zero weight gets the negative sign, as in the listing).
    Returns the record ``{"lambdas", "noises": {"gaussian": {metric: [...]}, "sign_consistent": ...}}``
    and the per-draw arrays ``{noise: [draws, points, metrics]}`` plus ``W``.
    """
    from threadpoolctl import threadpool_limits

    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    W, X, Y = digits_softmax()
    lambdas = np.linspace(-1.0, 1.0, points)
    rng = np.random.RandomState(seed)
    per_draw: dict[str, list[np.ndarray]] = {"gaussian": [], "sign_consistent": []}
    with threadpool_limits(1):  # small matrices: threads only add contention
        for _ in range(draws):
            noise = rng.randn(*W.shape)
            per_draw["gaussian"].append(softmax_metrics(W, X, Y, noise, lambdas))
            per_draw["sign_consistent"].append(
                softmax_metrics(W, X, Y, np.abs(noise) * (2.0 * (W > 0.0) - 1), lambdas))
    arrays = {k: np.stack(v) for k, v in per_draw.items()}
    record = {"lambdas": lambdas.tolist(),
              "noises": {k: {m: a.mean(0)[:, i].tolist() for i, m in enumerate(DIGITS_METRICS)}
                         for k, a in arrays.items()}}
    return record, {**arrays, "W": W}


def relu_simulation(seed: int = 0, d: int = 512, a: float = 0.1, samples: int = 10000,
                    lambdas: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Listing 1: ``v = (w + lambda * sign(w))^T h`` with ``w = randn(d) + a * h``, ``h = randn(d)``.

    Same random stream as the listing after ``np.random.seed(seed)`` (h first, then ``samples``
    vectors w per lambda, lambda in ``linspace(-1, 1, 5)`` by default); sign is
    ``2 * (w > 0) - 1``. Returns ``{"lambdas", "values": [lambdas, samples]}``.
    """
    lambdas = np.linspace(-1.0, 1.0, 5) if lambdas is None else np.asarray(lambdas, float)
    rng = np.random.RandomState(seed)
    h = rng.randn(d)
    values = []
    for lam in lambdas:
        w = rng.randn(samples, d) + a * h
        values.append((w + lam * (2.0 * (w > 0.0) - 1.0)) @ h)
    return {"lambdas": lambdas, "values": np.stack(values)}


def relu_summary(sim: dict[str, np.ndarray]) -> dict:
    """Per lambda: mean, std and the fraction of activated (positive) pre-activations."""
    v = sim["values"]
    return {"lambdas": sim["lambdas"].tolist(), "mean": v.mean(1).tolist(), "std": v.std(1).tolist(),
            "active_fraction": (v > 0).mean(1).tolist()}


def weight_patterns(W: np.ndarray, X: np.ndarray, Y: np.ndarray, cls: int = 0,
                    lambdas: np.ndarray | None = None) -> dict:
    """Fig. 10: the class-``cls`` weight ``w`` of the digits softmax regression as ``w + lambda * sign(w)``.

    For each lambda (default ``linspace(-1, 1, 5)``): the 8 x 8 pattern and its Pearson correlation with
    the mean input of class ``cls`` (the paper: at lambda = 0 the weight "correlates well with" a digit
    0; the sign-consistent direction keeps that correlation, the opposite one destroys it). Also the
    first sample of class ``cls``.
    """
    lambdas = np.linspace(-1.0, 1.0, 5) if lambdas is None else np.asarray(lambdas, float)
    w = W[cls]
    side = int(round(np.sqrt(w.size)))
    mean_input = X[Y == cls].mean(0)
    patterns = np.stack([w + lam * np.sign(w) for lam in lambdas])
    return {"lambdas": lambdas.tolist(), "cls": cls, "patterns": patterns.reshape(len(lambdas), side, side).tolist(),
            "sample": X[Y == cls][0].reshape(side, side).tolist(),
            "correlation": [float(np.corrcoef(p, mean_input)[0, 1]) for p in patterns]}

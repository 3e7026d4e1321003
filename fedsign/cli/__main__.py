"""``python -m fedsign.cli``: the ``fedsign`` console script."""

from fedsign.cli import console

console()

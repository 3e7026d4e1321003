"""Deployment building blocks under ``fedsign federation``: certificates, processes, the federation folder."""


class DeployError(RuntimeError):
    """A deployment step failed; the message is one line naming the cause and the fix."""

"""The one base class of the landscape package's input errors."""


class LandscapeError(ValueError):
    """Input a landscape analysis cannot use (unknown name, unfit file or data); the message is one line."""

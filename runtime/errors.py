"""Errors kinema raises for the person at the keyboard: one line, value and rule named."""


class KinemaError(Exception):
    """Base for user-facing errors: the CLI prints the message on one line and exits 2."""


class InputError(KinemaError, ValueError):
    """A user-supplied value (prompt, size, steps, path...) breaks a stated rule."""


class BundleError(KinemaError):
    """A bundle folder is missing, malformed, tampered with, or too new for this runtime."""


class ProviderError(KinemaError):
    """The requested ONNX Runtime execution provider is unknown or not available here."""


class Cancelled(KinemaError):
    """Generation was cancelled by a callback or a cancellation token; nothing was written."""


class PolicyError(KinemaError):
    """The prompt falls in a category of the content policy; nothing is loaded or generated."""

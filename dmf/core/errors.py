"""The product's errors: each message is one line an operator can act on."""


class DmfError(Exception):
    """Base of every error dmf reports to the operator (no traceback needed to understand it)."""


class InputError(DmfError):
    """Bad user input: a CLI argument or flow parameter."""


class LayoutError(DmfError):
    """An S3 key, prefix or manifest that is not of the bucket layout."""

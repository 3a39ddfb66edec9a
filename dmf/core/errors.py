"""The product's errors: each message is one line an operator can act on."""


class DmfError(Exception):
    """Base of every error dmf reports to the operator (no traceback needed to understand it)."""

    def __str__(self) -> str:
        # Messages may embed remote stderr or library text; the CLI and the flow logs show one line.
        return " ".join(line.strip() for line in super().__str__().splitlines() if line.strip())


class PermanentError(DmfError):
    """A failure that trying again cannot fix (bad input, a key outside the layout, a refused
    permission or host key): tasks fail at once instead of retrying, and say why."""


class InputError(PermanentError):
    """Bad user input: a CLI argument or flow parameter."""


class LayoutError(PermanentError):
    """An S3 key, prefix or manifest that is not of the bucket layout."""


def quote(value: object) -> str:
    """Untrusted text for a message: quoted, with control characters escaped so it stays one line."""
    return repr(value if isinstance(value, str) else str(value))

"""The product's errors: each message is one line an operator can act on."""
import re

# nodetool prints `error: <why>`, then this line, then the Java stack trace.
STACK_TRACE_MARK = "-- StackTrace --"
_JAVA_TRACE_LINE = re.compile(r"at \S+\(.*\)|\.\.\. \d+ more")


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


def failure_line(output: str) -> str:
    """The line of a failed command's output that says why: nodetool's `error: ...` before its stack
    trace; else the last line that is not a Java stack frame; "" for an empty output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if STACK_TRACE_MARK in lines[1:]:
        return lines[lines.index(STACK_TRACE_MARK, 1) - 1]
    while lines and _JAVA_TRACE_LINE.fullmatch(lines[-1]):
        lines.pop()
    return lines[-1] if lines else ""

"""Errors the user can act on, and the CLI's exit codes.

``EXIT_OK`` 0, ``EXIT_FAIL`` 1 (a check FAILed, apply failed, a saved plan is stale),
``EXIT_USAGE`` 2 (usage error, no region), ``EXIT_INTERRUPTED`` 130 (Ctrl-C), ``EXIT_BROKEN_PIPE``
141 (the reader of stdout went away, as for a process killed by SIGPIPE: 128 + 13).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


class SetupError(Exception):
    """An error the user can act on: ``remediation`` says how; ``code`` names it (JSON errors)."""

    exit_code = 1

    # Options whose corrected values make the same command line work (e.g. {"--trail":
    # "nc-trail"} for a misspelt trail, {"--yes": None} for a flag): the CLI prints that command
    # line as the fix.
    retry_with: dict[str, str | None] | None = None

    def __init__(self, message: str, remediation: str = "", code: str = "") -> None:
        self.message = message
        self.remediation = remediation
        self.code = code or (message.split(":", 1)[0] if message[:1].isupper() and
                             ":" in message and " " not in message.split(":", 1)[0]
                             else type(self).__name__)
        super().__init__(message)


class UsageError(SetupError):
    """A usage error (exit 2): a missing region, a flag combination that cannot work."""

    exit_code = 2

    def __init__(self, message: str, remediation: str = "", code: str = "UsageError") -> None:
        super().__init__(message, remediation, code)


def error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def error_message(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Message", "") or str(err)

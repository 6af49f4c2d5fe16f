"""Read-only checks, shared by the CLI (``trailwatch verify``, ``apply``'s own verify) and the
watchdog: each PASS / WARN / FAIL with a runnable fix.

The checks of the trail's wiring live in :mod:`.checks`, each subscription filter's destination
in :mod:`.destinations`, and the end-to-end canary (``verify --canary``, ``apply --wait``) in
:mod:`.canary`. This package exports the runner API.
"""

from setup.verify.checks import (
                                 CHECKS,
                                 FAIL,
                                 PASS,
                                 TRAIL_LEVEL_CHECKS,
                                 WARN,
                                 CheckResult,
                                 Context,
                                 run_checks,
                                 summary,
)

__all__ = ["CHECKS", "FAIL", "PASS", "TRAIL_LEVEL_CHECKS", "WARN", "CheckResult", "Context",
           "run_checks", "summary"]

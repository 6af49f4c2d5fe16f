"""trailwatch setup orchestrator: wire a CloudTrail trail into CloudWatch Logs, and prove it works."""

from handlers import __version__

__all__ = ["__version__"]

"""trailwatch event processor: CloudWatch Logs subscription -> CloudTrail records -> rules -> alerts."""

__version__ = "0.1.0"

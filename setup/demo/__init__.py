"""``trailwatch demo``: the whole path on an embedded local AWS (moto), no account needed.

Nothing in the product imports this package except the CLI's ``demo`` command, and it never
imports the CLI (it is handed the CLI's entry function). :mod:`.world` starts moto and builds
the organization and trail; :mod:`.cloudtrail` plays CloudTrail and the subscription;
:mod:`.canary`, :mod:`.topology` and :mod:`.routing` show ``verify --canary``, the audit-account
topology and where each alert went; :mod:`.localaws` makes moto as strict as AWS where the demo
needs it, :mod:`.logdelivery` for vended-log delivery (VPC flow logs); :mod:`.flowlogs` shows flow
logs to S3 and CloudWatch Logs and the readiness report; :mod:`.run` runs it all and prints the
report.
"""

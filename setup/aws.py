"""boto3 clients with trailwatch's user agent, per (service, region), with a call log.

Every client carries ``trailwatch/<version>`` in its user agent so trailwatch's own calls are
recognisable in CloudTrail (the event processor marks them ``expected_change``). boto3 honours
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` itself, which is how the demo and the
end-to-end tests point trailwatch at a local moto server; ``--endpoint-url`` sends every call to
one endpoint, as the AWS CLI's option does.

An endpoint that answers with something other than an AWS API response (a proxy's login page, a
web server at the wrong port) raises :class:`EndpointNotAws` before botocore parses it, so the user
sees what happened instead of an empty result or a parser traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from setup import __version__
from setup.errors import SetupError, UsageError

USER_AGENT = f"trailwatch/{__version__}"
READ_PREFIXES = ("Describe", "Get", "List", "Simulate", "Lookup", "Filter")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


class EndpointNotAws(SetupError):
    """The endpoint answered with a web page (or other non-API body), not an AWS API response."""

    def __init__(self, endpoint: str, status: int, what: str) -> None:
        super().__init__(
            f"{endpoint} answered HTTP {status} with {what}, not an AWS API response",
            "check --endpoint-url / AWS_ENDPOINT_URL (unset both to use AWS) and any proxy "
            "between you and AWS (HTTPS_PROXY)", code="EndpointNotAws")


def _not_aws(response: dict[str, Any]) -> str | None:
    """What a response is, when it cannot be an AWS API answer (None when it may be one). The body
    decides, not Content-Type: local emulators label XML and JSON answers text/html."""
    body = response.get("body") or b""
    head = body[:512].lstrip().lower() if isinstance(body, bytes) else b""
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    return None


@dataclass
class AwsClients:
    profile: str | None = None
    region: str | None = None
    session: Any = None
    endpoint_url: str | None = None
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (service, op, region)

    def __post_init__(self) -> None:
        if self.session is None:
            self.session = boto3.Session(profile_name=self.profile, region_name=self.region)
        self._clients: dict[tuple[str, str], Any] = {}

    @property
    def default_region(self) -> str | None:
        """--region, else AWS_REGION, else AWS_DEFAULT_REGION / the profile's region (boto3);
        None when none is set (callers raise a usage error)."""
        return (self.region or os.environ.get("AWS_REGION") or
                os.environ.get("AWS_DEFAULT_REGION") or self.session.region_name or None)

    def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.default_region
        if not region:
            raise UsageError("no AWS region", "pass --region or set AWS_REGION",
                             code="NoRegion")
        key = (service, region)
        if key not in self._clients:
            cfg = Config(user_agent_extra=USER_AGENT, retries={"mode": "standard",
                                                               "max_attempts": 5})
            client = self.session.client(service, region_name=region, config=cfg,
                                         endpoint_url=self.endpoint_url)
            client.meta.events.register("before-call.*.*", self._recorder(service, region))
            client.meta.events.register("before-parse.*.*", _refuse_non_api(client))
            self._clients[key] = client
        return self._clients[key]

    def _recorder(self, service: str, region: str):
        def record(model: Any, **_: Any) -> None:
            self.calls.append((service, model.name, region))
        return record

    def mutating_calls(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if is_mutating(c[1])]


def _refuse_non_api(client: Any):
    def check(response_dict: dict[str, Any], **_: Any) -> None:
        what = _not_aws(response_dict)
        if what:
            raise EndpointNotAws(client.meta.endpoint_url, response_dict.get("status_code", 0),
                                 what)
    return check


def known_regions() -> frozenset[str]:
    """Every Region of every partition in the installed botocore's data (``endpoints`` and
    ``partitions``), without the ``*-global`` pseudo-Regions. A Region newer than this botocore
    is missing: the CLI then needs ``--allow-unknown-region``."""
    import botocore.session
    session = botocore.session.get_session()
    regions: set[str] = set()
    for data, key in (("endpoints", "partition"), ("partitions", "id")):
        try:
            doc = session.get_data(data)
        except Exception:  # noqa: BLE001, S112 - an older botocore has only one of the two
            continue
        for partition in doc.get("partitions", []):
            regions.update(r for r in partition.get("regions", {}) if not r.endswith("-global"))
    return frozenset(regions)


def check_region(region: str | None, allow_unknown: bool = False) -> None:
    """A ``--region`` that no partition knows is a usage error before any call (a typo such as
    ``us-est-1`` would otherwise reach an endpoint that does not exist)."""
    if not region or allow_unknown:
        return
    known = known_regions()
    if region in known:
        return
    import difflib
    near = sorted(difflib.get_close_matches(region, sorted(known), n=3, cutoff=0.8))
    raise UsageError(f"--region {region} is not a Region this botocore knows"
                     + (f" (did you mean {' or '.join(near)}?)" if near else ""),
                     "fix the Region name; for a Region newer than the installed botocore, "
                     "pass --allow-unknown-region (or upgrade botocore)", code="UnknownRegion")


def clients_for_role(clients: AwsClients, role_arn: str, region: str) -> AwsClients:
    """Clients in another account through ``sts:AssumeRole``. Callables in
    ``clients.session_hooks`` (if any) are applied to the new session too (the demo's simulated
    CloudTrail listens on every session this way)."""
    creds = clients.client("sts", region).assume_role(
        RoleArn=role_arn, RoleSessionName="trailwatch-canary")["Credentials"]
    session = boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"], region_name=region)
    for hook in getattr(clients, "session_hooks", ()):
        hook(session)
    member = AwsClients(session=session, region=region, endpoint_url=clients.endpoint_url)
    member.session_hooks = list(getattr(clients, "session_hooks", ()))  # type: ignore[attr-defined]
    return member

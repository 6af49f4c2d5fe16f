"""In-memory AWS clients for fast unit tests of setup's read paths (verify, planner inputs, remove).

A :class:`FakeClients` hands out :class:`FakeService` objects per (service, region) and records
every call with its region and parameters, so a test can assert *where* and *how* a call was made
(e.g. GetTrailStatus in the trail's home region, by ARN). A method without a configured response
returns ``{}``; a response may be a dict, a callable taking the call's keyword arguments, or an
exception to raise. Paginators yield the method's single response as one page.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from setup.aws import AwsClients


def client_error(code: str, message: str = "", op: str = "Op") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


class _Paginator:
    def __init__(self, service: FakeService, op: str) -> None:
        self.service, self.op = service, op

    def paginate(self, **kw: Any):
        return [getattr(self.service, self.op)(**kw)]


class FakeService:
    def __init__(self, owner: FakeClients, name: str, region: str) -> None:
        self._owner, self._name, self._region = owner, name, region

    def get_paginator(self, op: str) -> _Paginator:
        return _Paginator(self, op)

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)

        def call(**kw: Any) -> Any:
            self._owner.log.append((self._name, op, self._region, kw))
            resp = self._owner.responses.get((self._name, op), {})
            if isinstance(resp, Exception):
                raise resp
            return resp(**kw) if callable(resp) else resp
        return call


class FakeClients(AwsClients):
    def __init__(self, region: str = "us-east-1",
                 responses: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__(region=region, session=object())
        self.responses: dict[tuple[str, str], Any] = dict(responses or {})
        self.log: list[tuple[str, str, str, dict[str, Any]]] = []

    def client(self, service: str, region: str | None = None) -> Any:
        return FakeService(self, service, region or self.region)

    def calls_to(self, service: str, op: str) -> list[tuple[str, dict[str, Any]]]:
        return [(r, kw) for s, o, r, kw in self.log if (s, o) == (service, op)]

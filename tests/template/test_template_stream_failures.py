"""Recoverable stream failures: in the stream modes a batch that exhausts its retries is written
whole to the encrypted, lifecycle-expired failure archive bucket (an S3 on-failure destination
keeps the records; a queue or topic destination keeps only their position, and the stream drops
them after its retention), with the permissions Lambda's documentation lists for an S3
destination (s3:PutObject, s3:ListBucket) and an alarm on the mapping's
OnFailureDestinationDeliveredEventCount. Observed before: the mapping's on-failure destination
was the SQS queue, which received metadata only."""

from __future__ import annotations

import pytest

from tests.template.test_template_modes import MODES, Env, cfn  # noqa: F401  (module-scoped)


def env(cfn, mode: str, **params) -> Env:
    base, _ = MODES[mode]
    return Env(cfn, {"SourceMode": mode, **base, **params})


def _role_statements(e: Env) -> list[dict]:
    role = e.value(e.resources()["ProcessorFunctionRole"]["Properties"])
    return [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("mode", ["kinesis", "destination"])
def test_stream_batches_go_whole_to_the_failure_archive(cfn, mode):
    e = env(cfn, mode)
    resources = e.resources()
    esm = e.value(resources["KinesisSource"]["Properties"])
    assert esm["DestinationConfig"] == {"OnFailure": {"Destination": "<FailureArchiveBucket.Arn>"}}
    assert esm["MetricsConfig"] == {"Metrics": ["EventCount"]}
    bucket = e.value(resources["FailureArchiveBucket"]["Properties"])
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rule, = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and int(rule["ExpirationInDays"]) > 0
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    statements = {s["Sid"]: s for s in _role_statements(e) if "Sid" in s}
    put = statements["WriteDiscardedStreamBatches"]
    assert (put["Action"], put["Resource"]) == (["s3:PutObject"], "<FailureArchiveBucket.Arn>/aws/lambda/*")
    listing = statements["ListFailureArchive"]
    assert (listing["Action"], listing["Resource"]) == (["s3:ListBucket"], "<FailureArchiveBucket.Arn>")
    alarm = e.value(resources["StreamBatchesDiscardedAlarm"]["Properties"])
    assert alarm["MetricName"] == "OnFailureDestinationDeliveredEventCount"
    assert alarm["Dimensions"] == [{"Name": "EventSourceMappingUUID", "Value": "<KinesisSource>"}]
    assert alarm["AlarmActions"] == ["<OpsTopic>"] and alarm["Threshold"] == 1


def test_direct_mode_grants_nothing_for_stream_batches(cfn):
    e = env(cfn, "direct")
    sids = {s.get("Sid") for s in _role_statements(e)}
    assert not {"WriteDiscardedStreamBatches", "ListFailureArchive"} & sids
    assert "StreamBatchesDiscardedAlarm" not in e.resources()
    # its failed asynchronous invocations keep their event (requestPayload) in the queue
    cfg = e.value(e.resources()["ProcessorFunctionEventInvokeConfig"]["Properties"])
    assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == "<FailedInvocationsQueue.Arn>"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_lost_destination_deliveries_are_alarmed(cfn, mode):
    alarm = env(cfn, mode).value(
        env(cfn, mode).resources()["DestinationDeliveryFailuresAlarm"]["Properties"])
    assert alarm["MetricName"] == "DestinationDeliveryFailures"
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": "<ProcessorFunction>"}]

"""``chat.topic``: can the processor's chat topic reach a chat channel?

The processor publishes alerts to ``CHAT_TOPIC_ARN``, an SNS topic mapped to a Slack or Teams
channel in Amazon Q Developer in chat applications (formerly AWS Chatbot), which is not an SQS
queue (that it subscribes with an HTTPS endpoint is commonly reported, not found in an AWS page;
the FIFO verdict does not depend on it). The check reads the topic (``sns:GetTopicAttributes``)
and, for an encrypted topic, who manages its key (``kms:DescribeKey``). What it encodes:

* **FIFO topic: FAIL.** SNS FIFO topics deliver to SQS queues only; "SNS FIFO topics can't
  deliver messages to customer managed endpoints, such as email addresses, mobile apps, phone
  numbers for text messaging (SMS), or HTTP(S) endpoints" (Amazon SNS Developer Guide, "Message
  delivery for FIFO topics", https://docs.aws.amazon.com/sns/latest/dg/fifo-message-delivery.html).
  The template's ``ChatTopicArn`` refuses a ``.fifo`` ARN at deploy time; this catches a topic
  set elsewhere (``verify --chat-topic``).
* **Customer managed key: WARN.** "Before you can use SSE, you must configure AWS KMS key policies
  to allow encryption of topics and encryption and decryption of messages" (Amazon SNS Developer
  Guide, "Key management", Configuring AWS KMS permissions,
  https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html): the publisher needs the key.
  template.yaml grants the processor ``sns:Publish`` on the topic and no key, so its publishes
  are refused (``KMSAccessDenied``, which the chat sink counts as a rejected alert) unless the
  key's own policy grants the processor's role (the watchdog cannot read key policies: a WARN,
  not a FAIL that would page for a key set up correctly).
* **AWS managed key (``alias/aws/sns``): WARN.** An AWS managed key is usable through its service
  by the account's principals, so the processor can publish. Whether chat applications deliver
  from an encrypted topic is *not confirmed*: no AWS page found says either way (an older AWS
  Chatbot troubleshooting text, quoted in nozaq/terraform-aws-secure-baseline#229, said encrypted
  topics do not appear in chat rooms), so the check warns and asks for a test message.
* A key whose manager cannot be read (another account's key, DescribeKey denied): WARN.

moto is lenient here (it subscribes an HTTPS endpoint to a FIFO topic and publishes to a topic
under any key): ``tests/setup/verify/test_chat_topic.py`` holds the strict fake.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from setup.errors import error_code, error_message
from setup.verify.checks import FAIL, PASS, WARN, CheckResult

CHECK_ID = "chat.topic"
AWS_MANAGED_SNS_KEY = "alias/aws/sns"


def _region(topic_arn: str) -> str | None:
    parts = topic_arn.split(":")
    return parts[3] if len(parts) == 6 and parts[3] else None


def key_manager(clients: Any, key_id: str, region: str | None) -> str | None:
    """``AWS`` or ``CUSTOMER`` for the topic's ``KmsMasterKeyId``; None when it cannot be read."""
    if key_id == AWS_MANAGED_SNS_KEY or key_id.endswith(":" + AWS_MANAGED_SNS_KEY):
        return "AWS"
    try:
        meta = clients.client("kms", region).describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError:
        return None
    manager = meta.get("KeyManager")
    return manager if manager in ("AWS", "CUSTOMER") else None


def chat_topic(clients: Any, topic_arn: str) -> CheckResult:
    """The ``chat.topic`` check of ``topic_arn`` (read-only)."""
    region = _region(topic_arn)
    name = topic_arn.rsplit(":", 1)[-1]
    where = f" --region {region}" if region else ""
    details: dict[str, Any] = {"topic": topic_arn}
    try:
        attrs = clients.client("sns", region).get_topic_attributes(
            TopicArn=topic_arn)["Attributes"]
    except ClientError as e:
        code = error_code(e)
        if code in ("NotFound", "NotFoundException"):
            return CheckResult(CHECK_ID, FAIL, f"the chat topic {topic_arn} does not exist: no "
                               "alert reaches the chat channel",
                               f"aws sns create-topic --name {name.removesuffix('.fifo')}{where}"
                               " # then map it to the channel in Amazon Q Developer in chat "
                               "applications and set the template's ChatTopicArn to it",
                               details=details)
        return CheckResult(CHECK_ID, WARN, f"cannot read the chat topic {topic_arn}: {code}: "
                           f"{error_message(e)[:200]}", "allow sns:GetTopicAttributes on the "
                           "topic (the template grants it to the watchdog)", details=details)
    fifo = str(attrs.get("FifoTopic", "")).lower() == "true" or name.endswith(".fifo")
    key = attrs.get("KmsMasterKeyId") or ""
    details.update({"fifo": fifo, "kms_key": key or None})
    if fifo:
        return CheckResult(
            CHECK_ID, FAIL, f"the chat topic {topic_arn} is a FIFO topic: SNS FIFO topics deliver "
            "only to SQS queues, never to Amazon Q Developer in chat applications, so no alert "
            "reaches the channel",
            f"aws sns create-topic --name {name.removesuffix('.fifo')}{where}  # a standard "
            "topic; map it to the channel and set the template's ChatTopicArn to its ARN",
            details=details)
    if not key:
        return CheckResult(CHECK_ID, PASS, f"the chat topic {topic_arn} is a standard topic "
                           "without server-side encryption", details=details)
    manager = key_manager(clients, key, region)
    details["kms_key_manager"] = manager
    if manager == "CUSTOMER":
        return CheckResult(
            CHECK_ID, WARN, f"the chat topic {topic_arn} is encrypted with the customer managed "
            f"key {key}: the template grants the processor no use of it, so unless the key's "
            "policy grants the processor's role kms:GenerateDataKey* and kms:Decrypt, SNS "
            "refuses its publishes (KMSAccessDenied) and no alert reaches the channel",
            f"aws sns set-topic-attributes --topic-arn {topic_arn} --attribute-name "
            f"KmsMasterKeyId --attribute-value {AWS_MANAGED_SNS_KEY}{where}",
            details=details)
    if manager == "AWS":
        return CheckResult(
            CHECK_ID, WARN, f"the chat topic {topic_arn} is encrypted with the AWS managed key "
            f"({key}): the processor can publish, but AWS documents no support of encrypted "
            "topics by chat applications",
            f"aws sns publish --topic-arn {topic_arn} --message 'chat test'{where}  # "
            "it must appear in the channel; if not: aws sns set-topic-attributes --topic-arn "
            f"{topic_arn} --attribute-name KmsMasterKeyId --attribute-value ''{where}",
            details=details)
    return CheckResult(
        CHECK_ID, WARN, f"the chat topic {topic_arn} is encrypted with {key}, whose manager "
        "cannot be read (kms:DescribeKey): with a customer managed key the processor cannot "
        "publish", f"aws kms describe-key --key-id {key}{where} --query KeyMetadata.KeyManager"
        "  # CUSTOMER: switch the topic to alias/aws/sns", details=details)

"""The CIS AWS Foundations monitoring controls (section 4.x; Security Hub CloudWatch.1-14).

This catalog is the single source of truth for the 15 filter patterns: the event processor
compiles them into detection rules, and ``trailwatch apply --cis-alarms`` deploys the very same
strings as CloudWatch Logs metric filters.

The patterns are the Security Hub strings verbatim (CloudWatch.1-14) and, for 4.15 which has no
Security Hub control, the CIS v2.0.0 text. Security Hub fails a control when the metric filter
differs from the prescribed string, so never "tidy" them: whitespace and quoting are kept as
published.
"""

from __future__ import annotations

from typing import NamedTuple

METRIC_NAMESPACE = "CISBenchmark"
CIS_BENCHMARK = "CIS AWS Foundations Benchmark"
CIS_VERSIONS = "v1.4.0-v2.0.0"   # the section 4.x numbering used here (v1.2.0 numbered them 3.x)


class CisControl(NamedTuple):   # a NamedTuple, not a dataclass: cheaper to define at cold start
    cis: str
    securityhub: str | None
    title: str
    severity: str
    metric_name: str
    pattern: str
    # MITRE ATT&CK context for the alert (metadata only: the pattern stays verbatim).
    tactics: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()

    @property
    def cis_v12(self) -> str | None:
        """The same control's number in CIS v1.2.0 (section 3), None for 4.15 (added later)."""
        section, _, n = self.cis.partition(".")
        return f"3.{n}" if section == "4" and self.securityhub else None

    @property
    def label(self) -> str:
        """Which CIS version and Security Hub control this pattern is, in one line."""
        if self.securityhub:
            return (f"{CIS_BENCHMARK} {CIS_VERSIONS} {self.cis} (v1.2.0 {self.cis_v12}); "
                    f"Security Hub control {self.securityhub}; pattern: the Security Hub string "
                    f"verbatim")
        return (f"{CIS_BENCHMARK} v2.0.0 {self.cis}; no Security Hub control; pattern: the CIS "
                f"v2.0.0 text verbatim")

    @property
    def rule_id(self) -> str:
        return f"cis-{self.cis}"

    @property
    def filter_name(self) -> str:
        """Name of the CloudWatch Logs metric filter trailwatch deploys for this control."""
        return f"trailwatch-cis-{self.cis}-{self.metric_name}"

    @property
    def alarm_name(self) -> str:
        return f"trailwatch-cis-{self.cis}-{self.metric_name}"


CIS_CONTROLS: tuple[CisControl, ...] = (
    CisControl(
        cis="4.3",
        securityhub="CloudWatch.1",
        title="Usage of the root user",
        severity="CRITICAL",
        metric_name="RootAccountUsage",
        pattern='{$.userIdentity.type="Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType !="AwsServiceEvent"}',
        tactics=("TA0001", "TA0004"),
        techniques=("T1078.004",),
    ),
    CisControl(
        cis="4.1",
        securityhub="CloudWatch.2",
        title="Unauthorized API calls",
        severity="MEDIUM",
        metric_name="UnauthorizedAPICalls",
        pattern='{($.errorCode="*UnauthorizedOperation") || ($.errorCode="AccessDenied*")}',
        tactics=("TA0007",),
        techniques=("T1580",),
    ),
    CisControl(
        cis="4.2",
        securityhub="CloudWatch.3",
        title="Management console sign-in without MFA",
        severity="HIGH",
        metric_name="ConsoleSigninWithoutMFA",
        pattern='{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") && ($.userIdentity.type = "IAMUser") && ($.responseElements.ConsoleLogin = "Success") }',
        tactics=("TA0001",),
        techniques=("T1078.004",),
    ),
    CisControl(
        cis="4.4",
        securityhub="CloudWatch.4",
        title="IAM policy changes",
        severity="HIGH",
        metric_name="IAMPolicyChanges",
        pattern='{($.eventName=DeleteGroupPolicy) || ($.eventName=DeleteRolePolicy) || ($.eventName=DeleteUserPolicy) || ($.eventName=PutGroupPolicy) || ($.eventName=PutRolePolicy) || ($.eventName=PutUserPolicy) || ($.eventName=CreatePolicy) || ($.eventName=DeletePolicy) || ($.eventName=CreatePolicyVersion) || ($.eventName=DeletePolicyVersion) || ($.eventName=AttachRolePolicy) || ($.eventName=DetachRolePolicy) || ($.eventName=AttachUserPolicy) || ($.eventName=DetachUserPolicy) || ($.eventName=AttachGroupPolicy) || ($.eventName=DetachGroupPolicy)}',
        tactics=("TA0003", "TA0004"),
        techniques=("T1098",),
    ),
    CisControl(
        cis="4.5",
        securityhub="CloudWatch.5",
        title="CloudTrail configuration changes",
        severity="HIGH",
        metric_name="CloudTrailConfigChanges",
        pattern='{($.eventName=CreateTrail) || ($.eventName=UpdateTrail) || ($.eventName=DeleteTrail) || ($.eventName=StartLogging) || ($.eventName=StopLogging)}',
        tactics=("TA0005",),
        techniques=("T1562.008",),
    ),
    CisControl(
        cis="4.6",
        securityhub="CloudWatch.6",
        title="Management console authentication failures",
        severity="MEDIUM",
        metric_name="ConsoleAuthenticationFailures",
        pattern='{($.eventName=ConsoleLogin) && ($.errorMessage="Failed authentication")}',
        tactics=("TA0006",),
        techniques=("T1110",),
    ),
    CisControl(
        cis="4.7",
        securityhub="CloudWatch.7",
        title="Disabling or scheduled deletion of customer managed keys",
        severity="HIGH",
        metric_name="DisableOrDeleteCMK",
        pattern='{($.eventSource=kms.amazonaws.com) && (($.eventName=DisableKey) || ($.eventName=ScheduleKeyDeletion))}',
        tactics=("TA0040",),
        techniques=("T1485",),
    ),
    CisControl(
        cis="4.8",
        securityhub="CloudWatch.8",
        title="S3 bucket policy changes",
        severity="MEDIUM",
        metric_name="S3BucketPolicyChanges",
        pattern='{($.eventSource=s3.amazonaws.com) && (($.eventName=PutBucketAcl) || ($.eventName=PutBucketPolicy) || ($.eventName=PutBucketCors) || ($.eventName=PutBucketLifecycle) || ($.eventName=PutBucketReplication) || ($.eventName=DeleteBucketPolicy) || ($.eventName=DeleteBucketCors) || ($.eventName=DeleteBucketLifecycle) || ($.eventName=DeleteBucketReplication))}',
        tactics=("TA0009", "TA0010"),
        techniques=("T1530",),
    ),
    CisControl(
        cis="4.9",
        securityhub="CloudWatch.9",
        title="AWS Config configuration changes",
        severity="MEDIUM",
        metric_name="AWSConfigChanges",
        pattern='{($.eventSource=config.amazonaws.com) && (($.eventName=StopConfigurationRecorder) || ($.eventName=DeleteDeliveryChannel) || ($.eventName=PutDeliveryChannel) || ($.eventName=PutConfigurationRecorder))}',
        tactics=("TA0005",),
        techniques=("T1562.001",),
    ),
    CisControl(
        cis="4.10",
        securityhub="CloudWatch.10",
        title="Security group changes",
        severity="MEDIUM",
        metric_name="SecurityGroupChanges",
        pattern='{($.eventName=AuthorizeSecurityGroupIngress) || ($.eventName=AuthorizeSecurityGroupEgress) || ($.eventName=RevokeSecurityGroupIngress) || ($.eventName=RevokeSecurityGroupEgress) || ($.eventName=CreateSecurityGroup) || ($.eventName=DeleteSecurityGroup)}',
        tactics=("TA0005",),
        techniques=("T1562.007",),
    ),
    CisControl(
        cis="4.11",
        securityhub="CloudWatch.11",
        title="Network ACL changes",
        severity="MEDIUM",
        metric_name="NACLChanges",
        pattern='{($.eventName=CreateNetworkAcl) || ($.eventName=CreateNetworkAclEntry) || ($.eventName=DeleteNetworkAcl) || ($.eventName=DeleteNetworkAclEntry) || ($.eventName=ReplaceNetworkAclEntry) || ($.eventName=ReplaceNetworkAclAssociation)}',
        tactics=("TA0005",),
        techniques=("T1562.007",),
    ),
    CisControl(
        cis="4.12",
        securityhub="CloudWatch.12",
        title="Network gateway changes",
        severity="MEDIUM",
        metric_name="NetworkGatewayChanges",
        pattern='{($.eventName=CreateCustomerGateway) || ($.eventName=DeleteCustomerGateway) || ($.eventName=AttachInternetGateway) || ($.eventName=CreateInternetGateway) || ($.eventName=DeleteInternetGateway) || ($.eventName=DetachInternetGateway)}',
        tactics=("TA0005",),
        techniques=("T1562.007",),
    ),
    CisControl(
        cis="4.13",
        securityhub="CloudWatch.13",
        title="Route table changes",
        severity="MEDIUM",
        metric_name="RouteTableChanges",
        pattern='{($.eventName=CreateRoute) || ($.eventName=CreateRouteTable) || ($.eventName=ReplaceRoute) || ($.eventName=ReplaceRouteTableAssociation) || ($.eventName=DeleteRouteTable) || ($.eventName=DeleteRoute) || ($.eventName=DisassociateRouteTable)}',
        tactics=("TA0005",),
        techniques=("T1562.007",),
    ),
    CisControl(
        cis="4.14",
        securityhub="CloudWatch.14",
        title="VPC changes",
        severity="MEDIUM",
        metric_name="VPCChanges",
        pattern='{($.eventName=CreateVpc) || ($.eventName=DeleteVpc) || ($.eventName=ModifyVpcAttribute) || ($.eventName=AcceptVpcPeeringConnection) || ($.eventName=CreateVpcPeeringConnection) || ($.eventName=DeleteVpcPeeringConnection) || ($.eventName=RejectVpcPeeringConnection) || ($.eventName=AttachClassicLinkVpc) || ($.eventName=DetachClassicLinkVpc) || ($.eventName=DisableVpcClassicLink) || ($.eventName=EnableVpcClassicLink)}',
        tactics=("TA0005",),
        techniques=("T1562.007",),
    ),
    CisControl(
        cis="4.15",
        securityhub=None,
        title="AWS Organizations changes",
        severity="HIGH",
        metric_name="OrganizationsChanges",
        pattern='{ ($.eventSource = organizations.amazonaws.com) && (($.eventName = "AcceptHandshake") || ($.eventName = "AttachPolicy") || ($.eventName = "CreateAccount") || ($.eventName = "CreateOrganizationalUnit") || ($.eventName = "CreatePolicy") || ($.eventName = "DeclineHandshake") || ($.eventName = "DeleteOrganization") || ($.eventName = "DeleteOrganizationalUnit") || ($.eventName = "DeletePolicy") || ($.eventName = "DetachPolicy") || ($.eventName = "DisablePolicyType") || ($.eventName = "EnablePolicyType") || ($.eventName = "InviteAccountToOrganization") || ($.eventName = "LeaveOrganization") || ($.eventName = "MoveAccount") || ($.eventName = "RemoveAccountFromOrganization") || ($.eventName = "UpdatePolicy") || ($.eventName = "UpdateOrganizationalUnit")) }',
        tactics=("TA0005", "TA0004"),
        techniques=("T1666", "T1484"),
    ),
)

CIS_BY_RULE_ID = {c.rule_id: c for c in CIS_CONTROLS}

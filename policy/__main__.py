"""The policy pack: `pulumi preview --policy-pack policy` (the policies are in pack.py)."""

from pulumi_policy import EnforcementLevel, PolicyPack

from pack import POLICIES

PolicyPack(name="mailstack", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)

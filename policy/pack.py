"""mailstack's CrossGuard policies: the checks of `rules.py`, as the engine runs them.

Every policy is mandatory: a violation fails `pulumi preview` and stops
`pulumi up` before the resource is created or changed.

What each policy reads:
- the resource's own inputs (`args.props`: camelCase, secrets unwrapped);
- for the stack-wide MX check, every resource's outputs (`args.resources`);
- the stack's config, which the engine hands a policy pack in PULUMI_CONFIG
  (decrypted): the kind of stack (host or domain, `rules.stack_kind`), the
  host stack's `mailstack:testing` flag, and the secret values that must
  never appear on a command line.

Which policy applies to which kind of stack:
- both: mail-host-not-proxied, spf-ends-in-all, dkim-key-2048-bits (a host
  stack has no DKIM record: nothing to check), no-secret-on-command-line,
  records-in-their-stack (the host's records in the host stack, the domain's
  in its domain stack);
- host stack only: soft-bounce-only-while-testing (soft_bounce and testing are
  host-stack keys; a domain stack's units carry no Postfix config).

A value that is unknown during preview (the DKIM key, generated on the host)
makes that policy not applicable to that resource in the preview; `pulumi up`
checks it with the real value before the record is created.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

import rules

MANDATORY = EnforcementLevel.MANDATORY


def _resource_policy(
    name: str, description: str, types: tuple[str, ...], check: Callable[[Mapping[str, Any]], list[str]]
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        try:
            problems = check(args.props)
        except UnknownValueError as err:
            args.not_applicable(f"{err.message}; checked again by `pulumi up` once it is known")
            return
        for problem in problems:
            report_violation(problem, args.urn)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def environ_config() -> dict[str, Any]:
    """The stack's config as the engine passed it to this process."""
    return rules.stack_config(os.environ)


def environ_secret_keys() -> list[str]:
    """Config keys marked secret, when the engine says (PULUMI_CONFIG_SECRET_KEYS, JSON list)."""
    try:
        keys = json.loads(os.environ.get("PULUMI_CONFIG_SECRET_KEYS") or "[]")
    except json.JSONDecodeError:
        return []
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


mail_host_not_proxied = _resource_policy(
    "mail-host-not-proxied",
    "The mail host's A/AAAA records are never proxied by Cloudflare (SMTP does not pass a proxy).",
    (rules.DNS_RECORD,),
    rules.mail_host_not_proxied,
)

spf_ends_in_all = _resource_policy(
    "spf-ends-in-all",
    "SPF records end in -all or ~all and never allow everyone (+all).",
    (rules.DNS_RECORD,),
    rules.spf_problems,
)

dkim_key_size = _resource_policy(
    "dkim-key-2048-bits",
    f"DKIM keys are RSA keys of at least {rules.DKIM_MIN_BITS} bits (RFC 8301; the guide's size).",
    (rules.DNS_RECORD,),
    rules.dkim_problems,
)

def _validate_soft_bounce(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in rules.COMMANDS:
        return
    config = environ_config()
    if rules.stack_kind(config) != "host":
        args.not_applicable("soft_bounce and testing are host-stack keys; this is not a host stack")
        return
    for problem in rules.soft_bounce_problems(args.props, rules.is_testing(config)):
        report_violation(problem, args.urn)


soft_bounce_only_while_testing = ResourceValidationPolicy(
    name="soft-bounce-only-while-testing",
    description="Postfix's soft_bounce is on only in a host stack that sets mailstack:testing "
    "(the guide: remove it after testing).",
    validate=_validate_soft_bounce,
    enforcement_level=MANDATORY,
)

no_secret_on_command_line = _resource_policy(
    "no-secret-on-command-line",
    "No remote command carries a secret (key, password hash, token) in its command line.",
    rules.COMMANDS,
    lambda props: rules.command_secret_problems(props, rules.stack_secrets(environ_config(), environ_secret_keys())),
)


def _validate_records(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [rules.Resource(r.urn, r.resource_type, r.props) for r in args.resources]
    try:
        problems = rules.record_problems(resources, rules.stack_kind(environ_config()))
    except UnknownValueError as err:
        args.not_applicable(f"{err.message}; checked again by `pulumi up` once it is known")
        return
    for urn, problem in problems:
        report_violation(problem, urn)


records_in_their_stack = StackValidationPolicy(
    name="records-in-their-stack",
    description="The host's records (A/AAAA) are in the host stack, a domain's (MX) in its domain stack; "
    "an MX names a host.",
    validate=_validate_records,
    enforcement_level=MANDATORY,
)

POLICIES = [
    mail_host_not_proxied,
    records_in_their_stack,
    spf_ends_in_all,
    dkim_key_size,
    soft_bounce_only_while_testing,
    no_secret_on_command_line,
]

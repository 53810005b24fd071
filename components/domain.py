"""MailDomain: one mail domain, its host and its DNS records, wired together.

The host's DKIM unit prints the public key it generated; that Output becomes
the content of the DKIM TXT record. The host's addresses come from the stack
config and feed A, AAAA, SPF and PTR.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi.runtime.config as runtime_config

from components.config import PROJECT, ConfigError, MailConfig, load_config
from components.dns import MailDns
from components.host import MailHost


class MailDomainArgs(TypedDict):
    config: MailConfig
    """The stack's validated configuration."""


class MailDomain(pulumi.ComponentResource):
    """Everything one stack (one mail domain) owns."""

    def __init__(self, name: str, args: MailDomainArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailDomain", name, None, opts)
        cfg = args["config"]
        self.host = MailHost(f"{name}-host", {"config": cfg}, pulumi.ResourceOptions(parent=self))
        self.dns = MailDns(
            f"{name}-dns",
            {"config": cfg, "dkim_public_key": self.host.dkim_public_key},
            pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs(
            {
                "hostname": cfg.host_name,
                "dkimSelector": cfg.dkim_selector,
                "records": self.dns.records,
            }
        )


def stack_config_values() -> dict[str, Any]:
    """Every `mailstack:*` value Pulumi hands the program, secrets decrypted."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {k: v for k, v in values.items() if k.startswith(f"{PROJECT}:")}


def load_stack_config() -> MailConfig:
    """The stack's config, or a clean error naming every bad key (no traceback)."""
    try:
        return load_config(stack_config_values())
    except ConfigError as err:
        raise pulumi.RunError("invalid stack configuration:\n" + str(err)) from None

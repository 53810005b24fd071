"""What a domain stack knows of its host: the host stack's outputs, as plain values.

The domain stack reads them through a StackReference (components/domain.py);
the pure functions (records, units) take a HostFacts, so that they stay pure
and the offline commands can build one from the host stack's file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The host stack's outputs a domain stack reads (components/host.py exports them).
OUTPUTS = ("host_id", "hostname", "addresses", "ssh_user", "tls")
# Outputs a host stack of an older mailstack lacks: their defaults stand in.
OPTIONAL_OUTPUTS = {"tls": "self-signed"}


@dataclass(frozen=True)
class HostFacts:
    host_id: str  # "project/stack" of the host stack, as recorded on the host
    hostname: str  # the host's name: MX target, HELO name
    addresses: list[str] = field(default_factory=list)  # public IPv4 and IPv6 addresses
    ssh_user: str = "root"
    tls: str = "self-signed"  # mailstack:tls of the host stack: acme, self-signed or files

    @property
    def ipv4(self) -> list[str]:
        return [a for a in self.addresses if ipaddress.ip_address(a).version == 4]

    @property
    def ipv6(self) -> list[str]:
        return [a for a in self.addresses if ipaddress.ip_address(a).version == 6]

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any]) -> HostFacts:
        """From the host stack's outputs; a missing one is a clear error."""
        missing = [name for name in OUTPUTS if outputs.get(name) in (None, "") and name not in OPTIONAL_OUTPUTS]
        if missing:
            raise ValueError(
                f"the host stack exports no {', '.join(missing)} (is mailstack:host_stack a host stack, "
                "and has `pulumi up` run for it?)"
            )
        return cls(
            host_id=str(outputs["host_id"]),
            hostname=str(outputs["hostname"]),
            addresses=[str(a) for a in outputs["addresses"]],
            ssh_user=str(outputs["ssh_user"]),
            tls=str(outputs.get("tls") or OPTIONAL_OUTPUTS["tls"]),
        )

    @property
    def trusted_tls(self) -> bool:
        """The host gets certificates from an ACME CA (mailstack:tls acme): what MTA-STS needs."""
        return self.tls == "acme"

"""mailstack: one Pulumi stack per mail domain (see README.md)."""

import pulumi

from components.quickimport import paused_collector

with paused_collector():  # the provider SDKs are large: README, "Performance"
    from components.domain import MailDomain, load_stack_config

config = load_stack_config()
mail = MailDomain("mail", {"config": config})

pulumi.export("hostname", config.host_name)
pulumi.export("addresses", config.addresses)
pulumi.export("dkim_selector", config.dkim_selector)
pulumi.export("records", mail.dns.records)
pulumi.export("expected_ptrs", mail.dns.expected_ptrs)
pulumi.export("tls_fingerprint", mail.host.tls_fingerprint)

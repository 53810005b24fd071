"""mailstack: a host stack per mail server, and a stack per mail domain on it (see README.md)."""

from components.quickimport import paused_collector

with paused_collector():  # the provider SDKs are large: README, "Performance"
    from components.config import HostConfig
    from components.domain import MailDomain, export_domain, load_stack_config
    from components.host import MailHost, export_host

config = load_stack_config()
if isinstance(config, HostConfig):
    export_host(config, MailHost("host", {"config": config}))
else:
    export_domain(config, MailDomain("domain", {"config": config}))

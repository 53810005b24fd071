"""policyd-spf: checks the SPF of incoming mail for Postfix.

Host level only: /etc/postfix-policyd-spf-python/policyd-spf.conf
(templates/policyd-spf/), which Postfix's master.cf hands to each policyd-spf
it spawns (paths.POLICYD_SPF_CONF).
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import HostConfig
from components.render import HostFile, host_file

NAME = "policyd-spf"
PACKAGES = ("postfix-policyd-spf-python",)
CONFIG_DIRS = [paths.POLICYD_SPF_DIR]

# Nothing to reload (see the template).
APPLY = "policyd-spf/apply.sh.j2"


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit: all host level."""
    return [host_file(paths.POLICYD_SPF_CONF, "policyd-spf/policyd-spf.conf.j2", cfg=cfg)]


# policyd-spf has no checker: read the file with its own reader
# (spf_engine.policydspfsupp._readConfigFile). That reader only logs unknown
# names and malformed lines to syslog and goes on, so collect what it would log.
_PARSE = (
    "/usr/bin/python3 -c '"
    "import sys, syslog\n"
    "msgs = []\n"
    "syslog.syslog = lambda *args: msgs.append(str(args[-1]))\n"
    "from spf_engine import policydspfsupp as spf\n"
    "path = sys.argv[1]\n"
    "try:\n"
    "    spf._readConfigFile(path, dict(spf.defaultConfigData), {\"debugLevel\": 1})\n"
    "except Exception as err:\n"
    "    msgs.append(\"%s: %s\" % (path, err))\n"
    "for msg in msgs:\n"
    "    print(\"policyd-spf: \" + msg, file=sys.stderr)\n"
    "sys.exit(1 if msgs else 0)\n"
    f"' {staged(paths.POLICYD_SPF_CONF)}"
)

CHECKS: list[tuple[str | None, str]] = [
    ("policyd-spf.conf read by policyd-spf", _PARSE),
]

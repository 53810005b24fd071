"""The shared tables: what Postfix, Dovecot and OpenDKIM know of every hosted domain.

Host level only. Each domain stack writes its own folder
(paths.domain_dir: mailboxes, aliases, sender_logins, catch_all, passwd,
dkim_selector and its DKIM key); the host's assembler, paths.ASSEMBLER
(templates/tables/assemble.sh.j2), reads every such folder and builds from
them, under one lock (paths.TABLES_LOCK), the tables the daemons read:
Postfix's domains, mailboxes, aliases, sender_logins and retired_domains
(hash: tables), Dovecot's users file and OpenDKIM's KeyTable and SigningTable.
It refuses, changing nothing, when the folders disagree (an alias into a
domain that is not hosted, a DKIM key OpenDKIM would refuse, ...). The host
stack installs and runs it; every domain stack runs it after writing its files.
docs/tables.md tells an administrator how to run it by hand.
"""

from __future__ import annotations

from components import paths
from components.render import render_template

NAME = "tables"

TEMPLATE = "tables/assemble.sh.j2"

# The first line of every table the assembler writes.
HEADER = f"# made by mailstack-assemble from {paths.DOMAINS_DIR}; do not edit"

# The lines the assembler accepts, as bash regular expressions (matched under
# LC_ALL=C). A local part as components/config.py accepts it: RFC 5321's
# dot-atom, lower-case, without "!", "%" and "#" (Postfix gives them a meaning).
_ATEXT = r"[a-z0-9&'*+/=?^_`{|}~$-]"
LOCAL_PART_RE = rf"{_ATEXT}+(\.{_ATEXT}+)*"
# A domain name: lower-case labels of letters, digits and inner hyphens, two or more.
# (No {0,61} length bound: bash compiles the pattern again at every match, and a
# bounded repeat makes that a millisecond each, minutes for a host of 10,000
# mailboxes. The config model has already bounded every label to 63 characters.)
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
DOMAIN_RE = rf"{_LABEL}(\.{_LABEL})+"
# A DKIM selector: one or more labels (it becomes <selector>._domainkey.<domain>).
SELECTOR_RE = rf"{_LABEL}(\.{_LABEL})*"
# A crypt(3) hash ($id$[params$]salt$hash: printable, no ":" nor space) or "!" (no login).
PASSWORD_HASH_RE = r"(!|\$[0-9a-z]+\$[!-9;-~]+)"


def assembler_script(host_name: str, vmail_uid: int) -> str:
    """The assembler, /usr/local/sbin/mailstack-assemble, for a host called `host_name`.

    `host_name` is the host's myhostname: Postfix delivers mail for it
    locally (mydestination), so no hosted domain may be called that.
    `vmail_uid` is the account that owns every mailbox; the tables do not
    name it (Dovecot's static userdb does), so the script only records it
    in its header, for whoever reads the installed file.
    """
    return render_template(
        TEMPLATE,
        host_name=host_name.lower(),
        vmail_uid=int(vmail_uid),
        header=HEADER,
        local_part_re=LOCAL_PART_RE,
        domain_re=DOMAIN_RE,
        selector_re=SELECTOR_RE,
        password_hash_re=PASSWORD_HASH_RE,
    )

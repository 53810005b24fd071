"""The mailboxes' system accounts (mailstack:users), one per user.

Domain level only: its own unit (templates/accounts/domain/accounts.sh.j2)
creates, unlocks and locks the accounts it made. The password hashes are
secret: they travel on the unit's stdin (`accounts_stdin`), so the script is
the command line itself.
"""

from __future__ import annotations

from components.config import MailConfig
from components.render import render_template

NAME = "accounts"


def accounts_script() -> str:
    """The accounts unit's own work (without the owner check): reads `accounts_stdin`."""
    return render_template("accounts/domain/accounts.sh.j2")


def accounts_stdin(cfg: MailConfig) -> str:
    """One `name<TAB>hash` line per user ("-" for no hash). Secret: hold it in a secret Output."""
    lines = []
    for user in cfg.users:
        secret = user.password_hash.get_secret_value() if user.password_hash else "-"
        lines.append(f"{user.name}\t{secret}\n")
    return "".join(lines)

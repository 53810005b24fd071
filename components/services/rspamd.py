"""rspamd (with Redis): scores incoming mail as Postfix's milter, beside OpenDKIM.

Host level only, and only with mailstack:spam_filter true (the default):
without it there is no unit, no milter in main.cf, no learning, no Junk filing.

Debian's packages, Debian's own files left as they are: mailstack writes only
files in /etc/rspamd/local.d/ (merged over Debian's) and one in override.d/
(actions: the keys decide them, not the web interface's dynamic settings).

- Workers on loopback only: the scanner 127.0.0.1:11333, the milter (proxy,
  self_scan) 127.0.0.1:11332, the controller 127.0.0.1:11334 and [::1]:11334.
- Actions from the keys: reject (5xx) from spam_reject_score, "add header"
  (X-Spam: Yes, added by the proxy; an X-Spam from outside is removed) from
  spam_header_score, greylist (4xx, first delivery only; the greylist module,
  in Redis) from spam_greylist_score. Mail a user submits and mail from the
  host itself is never refused, greylisted or marked for its score (a
  settings rule drops those actions; greylist's check_authed/check_local).
- OpenDKIM signs (dkim_signing and arc are off here); rspamd's SPF, DKIM and
  DMARC symbols only add score (README, "Spam filtering": who decides what).

Redis: Debian's redis-server as it comes (bind 127.0.0.1 -::1, protected
mode), with no file of mailstack's: a config include would have to edit
Debian's redis.conf to be read at all. APPLY instead asks the running Redis
what it binds (`redis-cli CONFIG GET bind`) and refuses, naming the address,
when that is anything but loopback.

The controller's password (mailstack:spam_controller_password, a secret)
travels on the unit's stdin (the unit's command is its script, as the TLS
unit's with tls: acme) and lands in local.d/PASSWORD_FILE, root:_rspamd 0640,
which worker-controller.inc includes. It is kept as set (plain, or the hash
`rspamadm pw` prints): hashing it on the host needs rspamadm pw at a terminal,
and the file is as private as a hash would be (root and rspamd's own user).
Without it the file holds a random password no one knows, made once and kept
(Debian's worker-controller.inc sets "q1", the same on every Debian host): the
web interface cannot be used, which is the safe default (README says so).

Learning: rspamd lets any client of 127.0.0.1 in without a password when
secure_ip names loopback (Debian's default), so any local user could learn and
use the web interface. mailstack empties secure_ip and gives learning its own
door: the controller also listens on LEARN_SOCKET, a unix socket of mode 0660,
owner _rspamd, group vmail (rspamd lets a unix-socket client in without a
password; the socket's mode decides who). Dovecot's IMAPSieve scripts run as
vmail: LEARN_SPAM_COMMAND / LEARN_HAM_COMMAND (the message on stdin) and
STAT_COMMAND are what they, and verify, run.
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import HostConfig, duration_seconds
from components.render import HostFile, host_file

NAME = "rspamd"
PACKAGES = ("rspamd", "redis-server")
RSPAMD_DIR = "/etc/rspamd"
LOCAL_D = f"{RSPAMD_DIR}/local.d"
OVERRIDE_D = f"{RSPAMD_DIR}/override.d"
RSPAMD_CONF = f"{RSPAMD_DIR}/rspamd.conf"
CONFIG_DIRS = [RSPAMD_DIR]

APPLY = "rspamd/apply.sh.j2"
BEFORE = "rspamd/before.sh.j2"

# Where each worker listens (the contract with Postfix, Dovecot's learning and verify).
NORMAL_ADDRESS = "127.0.0.1:11333"
CONTROLLER_ADDRESSES = ("127.0.0.1:11334", "[::1]:11334")
PROXY_HOST, PROXY_PORT = "127.0.0.1", 11332
PROXY_ADDRESS = f"{PROXY_HOST}:{PROXY_PORT}"
# What Postfix's smtpd_milters names (main.cf).
MILTER = f"inet:{PROXY_ADDRESS}"
REDIS_SERVER = "127.0.0.1"
REDIS_PORT = 6379

# Learning: the controller's unix socket, for the vmail group (Dovecot's IMAPSieve
# scripts) and root; no password over it.
RSPAMD_USER = "_rspamd"
LEARN_GROUP = paths.VMAIL_USER
LEARN_SOCKET = "/run/rspamd/learn.sock"
LEARN_SPAM_COMMAND = f"rspamc -h {LEARN_SOCKET} learn_spam"
LEARN_HAM_COMMAND = f"rspamc -h {LEARN_SOCKET} learn_ham"
# The learned counts ("learned" per statfile) and more.
STAT_COMMAND = f"rspamc -h {LEARN_SOCKET} stat"

# The controller's password (mailstack:spam_controller_password), from the unit's stdin.
PASSWORD_FILE = "mailstack-controller-password.inc"
PASSWORD_PATH = f"{LOCAL_D}/{PASSWORD_FILE}"
# The shell variable the unit's first line reads the password into (units.rspamd_unit).
PASSWORD_VARIABLE = "rspamd_password"


def packages(cfg: HostConfig) -> tuple[str, ...]:
    """Installed by the packages unit (none when spam_filter is off)."""
    return PACKAGES if cfg.spam_filter else ()


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit; none when spam_filter is off (then there is no unit)."""
    if not cfg.spam_filter:
        return []
    controller = [*CONTROLLER_ADDRESSES, f"{LEARN_SOCKET} mode=0660 owner={RSPAMD_USER} group={LEARN_GROUP}"]
    local = lambda name, **values: host_file(f"{LOCAL_D}/{name}", f"rspamd/{name}.j2", **values)  # noqa: E731
    return [
        local("worker-normal.inc", normal=NORMAL_ADDRESS),
        local("worker-controller.inc", controller=controller, learn_group=LEARN_GROUP, password_file=PASSWORD_FILE),
        local("worker-proxy.inc", proxy=PROXY_ADDRESS),
        local("redis.conf", redis=REDIS_SERVER),
        local("greylist.conf", cfg=cfg, delay=duration_seconds(cfg.greylist_delay)),
        local("milter_headers.conf"),
        local("settings.conf"),
        local("dkim_signing.conf"),
        local("arc.conf"),
        local("dmarc.conf"),
        host_file(f"{OVERRIDE_D}/actions.conf", "rspamd/actions.conf.j2", cfg=cfg),
    ]


def password_stdin(cfg: HostConfig) -> str:
    """What the unit reads on stdin: the controller's password, one line (a secret), or nothing."""
    if cfg.spam_controller_password is None:
        return "\n"
    return cfg.spam_controller_password.get_secret_value() + "\n"


# Without the key the controller must still not take Debian's own password
# (worker-controller.inc: "q1", the same on every Debian host): the file then
# holds a random one, made once and kept, that no one knows (first line RANDOM_MARK).
RANDOM_MARK = "# mailstack: no mailstack:spam_controller_password, so a random password no one knows"

# A preparation before the check: the stage gets the password file from the unit's
# stdin (read into $rspamd_password after the owner check), or keeps or makes the
# random one. printf is a shell builtin: no password is on a command line. Offline
# (`components check`) the variable is unset: the stage gets a random one.
PASSWORD_STAGE = (
    f"if [ -n \"${{{PASSWORD_VARIABLE}:-}}\" ]; then\n"
    f"  install -m 0640 -o root -g {RSPAMD_USER} /dev/null {staged(PASSWORD_PATH)}\n"
    f"  printf 'password = \"%s\";\\n' \"${PASSWORD_VARIABLE}\" >{staged(PASSWORD_PATH)}\n"
    f"elif ! head -n 1 {staged(PASSWORD_PATH)} 2>/dev/null | grep -qxF '{RANDOM_MARK}'; then\n"
    f"  install -m 0640 -o root -g {RSPAMD_USER} /dev/null {staged(PASSWORD_PATH)}\n"
    f"  printf '%s\\npassword = \"%s\";\\n' '{RANDOM_MARK}' \"$(head -c 33 /dev/urandom | base64 | tr -d '/+=')\" "
    f">{staged(PASSWORD_PATH)}\n"
    "fi"
)

# rspamadm configtest reads the whole staged config: Debian's rspamd.conf with
# $CONFDIR and $LOCAL_CONFDIR pointed at the stage (--var), so every include
# (Debian's files, local.d, override.d) is the staged one.
_CONFIGTEST = (
    f"( out=$(rspamadm --var=CONFDIR={staged(RSPAMD_DIR)} --var=LOCAL_CONFDIR={staged(RSPAMD_DIR)} "
    f"configtest -c {staged(RSPAMD_CONF)} 2>&1) "
    "|| { printf '%s\\n' \"$out\" >&2; exit 1; } )"
)

CHECKS: list[tuple[str | None, str]] = [
    (None, PASSWORD_STAGE),
    ("rspamadm configtest", _CONFIGTEST),
]

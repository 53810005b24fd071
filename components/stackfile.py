"""Reading a stack's config straight from `stacks/Pulumi.<stack>.yaml`.

For the offline commands, which run without the Pulumi CLI: `secure:` values
cannot be decrypted here, so they count as not set (no offline command needs
a secret).

Every command loads a stack through here, so a stack file that cannot be read
gets one kind of message everywhere, e.g. ``stacks/Pulumi.example.com.yaml
line 7 column 3: mapping values are not allowed here``, and exit status 2.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT, ConfigError, DomainConfig, HostConfig, load_config
from components.hostfacts import HostFacts
from components.stacknames import PROJECT_DIR, stack_file, stack_names



class StackFileError(ConfigError):
    """The stack file itself is unusable (not YAML, no `config:` mapping, ...)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; Pulumi refuses the file. So do we."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!s} is given twice (first at line {first.line + 1})", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _shown_path(path: Path, project_dir: Path) -> str:
    try:
        return str(path.relative_to(project_dir))
    except ValueError:
        return str(path)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a text value"
    return "a single value"


def read_stack_values(path: Path, name: str) -> dict[str, Any]:
    """The `config:` mapping of a stack file; StackFileError saying what is wrong with it."""
    try:
        data_bytes = path.read_bytes()
    except OSError as err:
        raise StackFileError([f"{name}: cannot be read ({err.strerror})"]) from None
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data_bytes[: err.start]
        line, column = before.count(b"\n") + 1, err.start - (before.rfind(b"\n") + 1) + 1
        raise StackFileError([f"{name} line {line} column {column}: is not UTF-8 text ({err.reason})"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = err.problem or err.context or "not valid YAML"
        if err.context and err.problem:
            what = f"{err.problem} ({err.context})"
        if "<block" in what:
            what += "; check this line's indentation"
        where = f"{name} line {mark.line + 1} column {mark.column + 1}" if mark else name
        raise StackFileError([f"{where}: {what}"]) from None
    except yaml.YAMLError as err:
        raise StackFileError([f"{name}: is not valid YAML ({err})"]) from None
    example = "(expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"
    if data is None:
        raise StackFileError([f"{name}: is empty {example}"])
    if not isinstance(data, dict):
        raise StackFileError([f"{name}: is {_kind(data)}, not a mapping {example}"])
    if "config" not in data:
        typo = next((str(k) for k in data if difflib.get_close_matches(str(k), ["config"], n=1, cutoff=0.6)), None)
        if typo:
            hint = f" ({typo}: looks like a misspelt config:)"
        elif any(str(k).startswith("mailstack:") for k in data):
            hint = " (the mailstack: keys are at the top level: indent them under config:)"
        else:
            hint = ""
        raise StackFileError([f"{name}: has no top-level config:{hint} {example}"])
    config = data["config"]
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StackFileError([f"{name}: config: is {_kind(config)}, not a mapping {example}"])
    return config


def _offline(values: dict[str, Any], shown: str) -> dict[str, Any]:
    """A stack's values for the offline commands, which never need a secret.

    A secret that another key requires (tls: acme needs the token) and that is
    not set yet stands as set: `render` and `check` work on a fresh stack file,
    and a notice says what `pulumi up` will still need.
    """
    key = f"{PROJECT}:acme_cloudflare_token"
    if values.get(f"{PROJECT}:tls") == "acme" and key not in values:
        print(f"note: {shown}: {key} is not set yet; `pulumi up` needs it "
              "(pulumi config set --secret acme_cloudflare_token)", file=sys.stderr)
        return {**values, key: {"secure": "not-set-yet"}}
    return values


def load_stack(stack: str, project_dir: Path = PROJECT_DIR) -> HostConfig | DomainConfig:
    """The stack's config model; FileNotFoundError or ConfigError (StackFileError) when it can't be had."""
    path = stack_file(stack, project_dir)
    if not path.is_file():
        known = stack_names(project_dir)
        raise FileNotFoundError(f"no stack {stack!r}: {path} does not exist (stacks here: {', '.join(known) or 'none'})")
    shown = _shown_path(path, project_dir)
    return load_config(_offline(read_stack_values(path, shown), shown))


def load_stack_or_report(stack: str, project_dir: Path = PROJECT_DIR) -> HostConfig | DomainConfig | None:
    """For the commands: the stack's config, or None after printing why it can't be had."""
    try:
        return load_stack(stack, project_dir)
    except (FileNotFoundError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def host_stack_name(cfg: DomainConfig) -> str:
    """The host stack's name: the last segment of mailstack:host_stack ("org/mailstack/host-mail" -> "host-mail")."""
    return cfg.host_stack.rsplit("/", 1)[-1]


def load_host_stack(cfg: DomainConfig, project_dir: Path = PROJECT_DIR) -> tuple[str, HostConfig]:
    """The host stack a domain stack names, read from its file in the same project: (name, config).

    Offline there is no StackReference: the host stack's file says what its
    outputs would be. ConfigError naming mailstack:host_stack and the file when
    it is missing, unusable or not a host stack.
    """
    name = host_stack_name(cfg)
    path = stack_file(name, project_dir)
    shown = _shown_path(path, project_dir)
    where = f"mailstack:host_stack: {cfg.host_stack!r} names the host stack {name}, read from {shown}"
    if not path.is_file():
        known = ", ".join(stack_names(project_dir)) or "none"
        raise StackFileError([f"{where}, which does not exist (stacks here: {known})"])
    try:
        host = load_config(_offline(read_stack_values(path, shown), shown))
    except ConfigError as err:
        raise StackFileError([f"{where}, which is not usable:", *(f"  {p}" for p in err.problems)]) from None
    if not isinstance(host, HostConfig):
        raise StackFileError([f"{where}, which is a domain stack (expected a host stack: mailstack:hostname set)"])
    return name, host


def host_facts(name: str, host: HostConfig) -> HostFacts:
    """The outputs the host stack `name` exports for its domain stacks (components/host.py), from its config."""
    # (getattr: HostConfig.tls comes with the ACME change; a config without it is self-signed.)
    return HostFacts(host_id=f"{PROJECT}/{name}", hostname=host.host_name, addresses=host.addresses,
                     ssh_user=host.ssh_user, tls=host.tls)


def host_facts_for(cfg: DomainConfig, project_dir: Path = PROJECT_DIR) -> HostFacts:
    """What the domain stack would read from its host stack's outputs, from the host stack's file."""
    return host_facts(*load_host_stack(cfg, project_dir))


def hosted_domains(host_stack: str, project_dir: Path = PROJECT_DIR) -> list[str]:
    """The domains of the project's domain stacks that name `host_stack` (stack files that load)."""
    domains = []
    for stack in stack_names(project_dir):
        try:
            cfg = load_stack(stack, project_dir)
        except (FileNotFoundError, ConfigError):
            continue
        if isinstance(cfg, DomainConfig) and host_stack_name(cfg) == host_stack:
            domains.append(cfg.domain)
    return domains

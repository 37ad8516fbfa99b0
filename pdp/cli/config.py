"""`pdp serve --config FILE` and `PDP_*` environment variables: every flag has a key.

Keys are derived from the parser itself, so a flag added to `pdp serve` gets a key with no
change here: `--decision-log` is `decision_log` in the file and `PDP_DECISION_LOG` in the
environment (the flag's argparse `dest`; `--no-pin-workers` is `pin_workers: false`).
Precedence: the command line, then the environment, then the file, then the flag's default.
Values go through the same argparse types and choices as the flag, so a bad value is refused
with the flag's own error, naming the key and where it came from.

Repeatable flags take a YAML list (or, in the environment, a comma-separated list);
on/off flags take booleans (`true`/`false`, or `1`/`0`, `yes`/`no`, `on`/`off` in the
environment).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_PREFIX = "PDP_"
# A configuration is a few dozen keys; anything this large is a mistake (or an attack).
MAX_CONFIG_BYTES = 256 * 1024
# Flags that are about the configuration itself, or internal (hidden from --help).
_NOT_KEYS = frozenset({"help", "config", "print_config"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A configuration file or variable that cannot be applied; the message says where."""


class _Unset(list):
    """The value of every flag before parsing: one the command line did not touch stays an
    empty `_Unset` (a list subclass, so `append` flags can still append to it)."""


def record_argv(parser: argparse.ArgumentParser) -> None:
    """Make `parser` keep the arguments it parsed, as `args.config_argv`: precedence needs to
    know which flags the command line gave, and a flag given its default value still counts."""
    parse = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None):  # type: ignore[no-untyped-def]
        argv = list(sys.argv[1:] if args is None else args)
        ns, rest = parse(argv, namespace)
        ns.config_argv = argv
        return ns, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def keyed_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """key (the flag's dest) -> its action, for every documented flag."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings
        and action.dest not in _NOT_KEYS
        and action.help is not argparse.SUPPRESS
    }


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def load_file(path: str) -> dict[str, Any]:
    import yaml

    try:
        if Path(path).stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config `{path}` is larger than {MAX_CONFIG_BYTES} bytes")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config `{path}`: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config `{path}` is not UTF-8 text") from None

    class Loader(yaml.SafeLoader):
        """Refuses a key given twice: which of the two was meant cannot be guessed."""

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen: set[object] = set()
            for key_node, _value in node.value:
                key = key_node.value
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key `{key}` is given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    try:
        data = yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"config `{path}`: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"config `{path}`: expected a mapping of keys to values")
    return data


def _tokens(action: argparse.Action, value: Any, source: str, key: str) -> list[str]:
    flag = action.option_strings[-1]
    if value is None:
        return []
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        on = _boolean(value, source, key)
        # store_true: `key: true` gives the flag; store_false (`--no-x`, key `x`): `false` does.
        wanted = on if isinstance(action, argparse._StoreTrueAction) else not on
        return [flag] if wanted else []
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else _split(value)
        out: list[str] = []
        for item in items:
            out += [flag, _scalar(action, item, source, key)]
        return out
    if isinstance(value, list | dict):
        raise ConfigError(f"{source}: `{key}` takes one value, not {type(value).__name__}")
    return [flag, _scalar(action, value, source, key)]


def _split(value: Any) -> list[Any]:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]


def _boolean(value: Any, source: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{source}: `{key}` takes true or false, not `{value}`")


def _scalar(action: argparse.Action, value: Any, source: str, key: str) -> str:
    if isinstance(value, list | dict):
        raise ConfigError(f"{source}: `{key}` takes plain values, not {type(value).__name__}")
    if isinstance(value, bool):  # YAML reads `on`/`off` as booleans
        choices = {str(c) for c in action.choices or ()}
        if {"on", "off"} <= choices:
            return "on" if value else "off"
        return "true" if value else "false"
    return str(value)


def _check(parser: argparse.ArgumentParser, tokens: list[str], source: str, key: str) -> None:
    """Parse one key's tokens alone, so a bad value is reported with its key and source."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(tokens)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
        message = message.split("error: ", 1)[-1]
        raise ConfigError(f"{source}: `{key}`: {message}") from None


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests the command line `argv` set, whatever their values."""
    keys = keyed_actions(parser)
    blank = argparse.Namespace(**{dest: _Unset() for dest in keys})
    with contextlib.redirect_stderr(io.StringIO()):
        ns, _rest = argparse.ArgumentParser.parse_known_args(parser, list(argv), blank)
    return {d for d in keys if not (isinstance(getattr(ns, d), _Unset) and not getattr(ns, d))}


def apply(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Fill `args` from the file and the environment where the command line was silent.
    Returns key -> where its value came from (`command line`, `env PDP_X`, `config FILE`)."""
    environ = os.environ if environ is None else environ
    keys = keyed_actions(parser)
    argv = getattr(args, "config_argv", [])
    given = explicit_dests(parser, argv)
    file_values: dict[str, Any] = load_file(args.config) if getattr(args, "config", None) else {}
    unknown = sorted(set(file_values) - set(keys))
    if unknown:
        raise ConfigError(
            f"config `{args.config}`: unknown key(s) {', '.join(f'`{k}`' for k in unknown)}; "
            f"`pdp serve --print-config` lists every key"
        )
    tokens: list[str] = []
    sources = {key: "command line" for key in given}
    for key, action in keys.items():
        if key in given:
            continue
        name = env_name(key)
        if name in environ:
            value: Any = environ[name]
            source = f"env {name}"
        elif file_values.get(key) is not None:  # `null`: the default, not a setting
            value, source = file_values[key], f"config {args.config}"
        else:
            continue
        own = _tokens(action, value, source, key)
        _check(parser, own, source, key)
        tokens += own
        sources[key] = source
    if tokens:
        merged = parser.parse_args([*tokens, *argv])
        for key in keys:
            setattr(args, key, getattr(merged, key))
    return sources


# What Kubernetes' service links put into a pod for a Service named `pdp` (`PDP_SERVICE_HOST`,
# `PDP_PORT_50051_TCP_ADDR`, ...): not settings, so not reported as unknown ones.
_SERVICE_LINK = re.compile(r"^PDP_(SERVICE_(HOST|PORT)(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)$")


def unknown_env(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> list[str]:
    """`PDP_*` variables that name no key: a typo (`PDP_DECISON_LOG`) would otherwise leave
    its setting silently off, where the same typo in `--config` is an error."""
    environ = os.environ if environ is None else environ
    known = {env_name(key) for key in keyed_actions(parser)}
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in known and not _SERVICE_LINK.match(name)
    )


def render(
    args: argparse.Namespace, parser: argparse.ArgumentParser, sources: Mapping[str, str]
) -> str:
    """The effective configuration as a YAML file `--config` accepts (values in JSON, which
    YAML reads as written), each key with its flag's help and where its value came from."""
    lines = ["# pdp serve: effective configuration (pdp serve --print-config)"]
    for key, action in keys_in_help_order(parser):
        value = getattr(args, key, None)
        if isinstance(action, argparse._StoreFalseAction):
            value = bool(value)
        help_text = " ".join((action.help or "").split())
        help_text = help_text.replace("%(default)s", str(action.default)).replace("%%", "%")
        lines.append(f"# {action.option_strings[-1]}: {help_text}")
        origin = f"  # {sources[key]}" if key in sources else ""
        lines.append(f"{key}: {json.dumps(value, default=str)}{origin}")
    return "\n".join(lines) + "\n"


def keys_in_help_order(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    return list(keyed_actions(parser).items())

"""Settings from the environment: every option's ``BACKFILL_*`` twin, and where the config file is.

In CI, settings come from variables more easily than from flags. Every option
of every command reads ``BACKFILL_`` + its long name in capitals, dashes made
underscores (``--url`` reads ``BACKFILL_URL``, ``--allow-http`` reads
``BACKFILL_ALLOW_HTTP``), and ``--help`` shows each one. A flag on the command
line wins over its variable. An option that declares its own variables
(``emit --entity`` also reads DevGrid's ``DEVGRID_ENTITY_ID``) keeps them.

The config file is ``-c FILE``, else ``$BACKFILL_CONFIG``, else
``./backfill.toml`` when it exists.
"""

from __future__ import annotations

from pathlib import Path

import click

from backfill.errors import ConfigError

PREFIX = "BACKFILL_"
CONFIG_VARIABLE = "BACKFILL_CONFIG"
DEFAULT_CONFIG = Path("backfill.toml")
# Options whose twin would be a trap: --help and --version do not come from the environment.
_NO_TWIN = {"help", "version"}


def twin_name(option: click.Option) -> str | None:
    """``BACKFILL_`` + the option's long name, or None for an option that has none."""
    longs = [name for name in option.opts if name.startswith("--")]
    if not longs:
        return None
    return PREFIX + longs[0][2:].replace("-", "_").upper()


def add_env_twins(group: click.Group) -> None:
    """Give every option of every command in ``group`` its variable, shown in ``--help``."""
    for command in group.commands.values():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in _NO_TWIN:
                continue
            if param.envvar is None:
                param.envvar = twin_name(param)
            param.show_envvar = param.envvar is not None


def find_config(given: Path | None, *, required: bool = True) -> Path | None:
    """The config path: ``-c`` (click fills it from $BACKFILL_CONFIG too), else ./backfill.toml if it exists."""
    if given is not None and str(given).strip():
        return given
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    if required:
        raise ConfigError(
            f"no config file: pass -c FILE, set ${CONFIG_VARIABLE}, or create ./{DEFAULT_CONFIG} "
            "(backfill init writes a first one)"
        )
    return None


def config_path(given: Path | None) -> Path:
    """The config path a command needs; raise ConfigError saying the three ways to give one."""
    found = find_config(given, required=True)
    assert found is not None
    return found

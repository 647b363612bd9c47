"""The lazily built, cached plugin manager (entry-point group ``uwsx``).

* Entry points are loaded the first time something asks for the registry, never at import.
* ``UWSX_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry-point loading; built-in plugins (the memory
  backend) are still registered, as pytest does with its own built-ins.
* ``UWSX_DISABLED_PLUGINS=a,b`` blocks the named entry points.
* :func:`register_plugin` adds a plugin object programmatically (tests, applications) and
  invalidates the cached registry.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib import metadata
from typing import Any

import pluggy

from uwsx import hookspecs
from uwsx.cli_registry import CommandRegistry
from uwsx.registry import BackendRegistry

__all__ = [
    "BUILTIN_PLUGINS",
    "get_plugin_manager",
    "get_registry",
    "plugin_errors",
    "register_plugin",
    "reset",
    "unregister_plugin",
]

#: Plugins that ship inside the ``uwsx`` distribution (also declared as entry points).
BUILTIN_PLUGINS: dict[str, str] = {"memory": "uwsx.memory.plugin"}

log = logging.getLogger("uwsx.plugins")

_pm: pluggy.PluginManager | None = None
_errors: dict[str, str] = {}
_registry: BackendRegistry | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in {"", "0", "false", "no", "off"}


def _disabled() -> set[str]:
    raw = os.environ.get("UWSX_DISABLED_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is not None:
        return _pm
    pm = pluggy.PluginManager("uwsx")
    pm.add_hookspecs(hookspecs)
    for name in _disabled():
        pm.set_blocked(name)
    for name, module in BUILTIN_PLUGINS.items():
        if not pm.is_blocked(name) and pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module), name=name)
    if not _truthy(os.environ.get("UWSX_DISABLE_PLUGIN_AUTOLOAD")):
        _load_entry_points(pm)
    pm.check_pending()
    _pm = pm
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Load every ``uwsx`` entry point. A plugin that fails to import is reported (logged and
    listed by :func:`plugin_errors`) instead of breaking every other backend."""
    _errors.clear()
    for ep in sorted(metadata.entry_points(group="uwsx"), key=lambda e: e.name):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            dist = ep.dist.name if ep.dist is not None else "?"
            _errors[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"
            log.warning("uwsx plugin %r (%s) failed to load: %s", ep.name, dist, exc)
            continue
        pm.register(plugin, name=ep.name)


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, with the reason."""
    get_plugin_manager()
    return dict(_errors)


def get_registry() -> BackendRegistry:
    """Every backend the installed plugins register (cached)."""
    global _registry
    if _registry is None:
        registry = BackendRegistry()
        get_plugin_manager().hook.uwsx_register_backends(registry=registry)
        _registry = registry
    return _registry


def get_commands() -> CommandRegistry:
    commands = CommandRegistry()
    get_plugin_manager().hook.uwsx_cli_commands(commands=commands)
    return commands


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object (module, class instance...) and rebuild the registry."""
    global _registry
    registered = get_plugin_manager().register(plugin, name=name)
    if registered is None:
        raise ValueError(f"plugin {name or plugin!r} is blocked")
    get_plugin_manager().check_pending()
    _registry = None
    return registered


def unregister_plugin(name: str) -> None:
    global _registry
    get_plugin_manager().unregister(name=name)
    _registry = None


def reset() -> None:
    """Forget the plugin manager and registry (re-read environment and entry points)."""
    global _pm, _registry
    _pm = None
    _registry = None


def dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"

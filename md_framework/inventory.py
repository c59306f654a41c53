"""What is installed: every hook plugin and driver with its distribution and status."""

from __future__ import annotations

import importlib.metadata as metadata
from typing import Any

from md_framework.drivers import BUILTIN_DISTRIBUTION, DRIVER_GROUPS, autoload_disabled, load_driver_class
from md_framework.errors import PluginError
from md_framework.plugins import ENTRY_POINT_GROUP, ESSENTIAL_PLUGINS, MDPluginManager


def plugin_inventory(pm: MDPluginManager) -> list[dict[str, Any]]:
    """One row per entry point: hook plugins of ``pm`` and drivers of every group.

    Drivers are imported to check they load; a driver that fails is listed as broken with
    the reason instead of stopping the listing.
    """
    rows: list[dict[str, Any]] = []
    for record in pm.records.values():
        rows.append({
            "name": record.name,
            "kind": "hooks",
            "group": ENTRY_POINT_GROUP,
            "distribution": record.distribution,
            "version": record.version,
            "target": record.value,
            "hooks": record.hooks,
            "status": record.status,
            "error": record.error,
            "essential": record.name in ESSENTIAL_PLUGINS and record.distribution == BUILTIN_DISTRIBUTION,
        })
    autoload = not autoload_disabled()
    for key, group in DRIVER_GROUPS.items():
        for entry_point in sorted(metadata.entry_points(group=group.namespace), key=lambda e: e.name):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            row: dict[str, Any] = {
                "name": entry_point.name,
                "kind": "driver",
                "group": group.namespace,
                "driver_kind": key,
                "distribution": dist_name,
                "version": dist.version if dist is not None else None,
                "target": entry_point.value,
                "hooks": [],
                "status": "ok",
                "error": None,
            }
            if not autoload and dist_name != "md-framework":
                row["status"] = "not-autoloaded"
            elif pm.is_blocked(entry_point.name):
                row["status"] = "blocked"
            else:
                try:
                    driver_cls = load_driver_class(key, entry_point.name)
                    row["description"] = driver_cls.description
                    row["options_schema"] = driver_cls.Options.model_json_schema()
                except PluginError as exc:
                    row["status"], row["error"] = "broken", str(exc)
            rows.append(row)
    return rows

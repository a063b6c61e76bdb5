"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared here, not in hook methods: since Airflow 3.2 ``conn-fields``
and ``ui-field-behaviour`` are read from this dict without importing the hook (the hook
methods ``get_connection_form_widgets`` / ``get_ui_field_behaviour`` are deprecated).
This module must stay import-free: the scheduler, the API server and every ``airflow``
command call it at start-up.
"""

from __future__ import annotations

from typing import Any

from polyv_connector.model import MAX_BATCH_SIZE, MAX_RPS_CEILING
from polyv_connector.runspec import DEFAULTS

_MAX_RPS, _TIMEOUT = DEFAULTS["budget_rps"], DEFAULTS["timeout"]
PACKAGE_NAME = "polyv-connector"  # must equal the distribution name in setup.cfg
CONN_TYPE = "polyv"
HOOK_CLASS = "polyv_connector.airflow.hooks.PolyvHook"
EXTRA_LINKS = ("RunPageLink", "ReportLink", "DataDocsLink")


def _integer(label: str, description: str, minimum: int, maximum: int) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["integer", "null"], "minimum": minimum, "maximum": maximum},
    }


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` shows and how the UI draws the ``polyv`` connection form."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "POLYV",
        "description": "Sync viewer attributes from a SQL warehouse or Parquet files into POLYV viewer custom fields.",
        "integrations": [
            {
                "integration-name": "POLYV",
                "external-doc-url": "https://help.polyv.net/",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "POLYV", "python-modules": ["polyv_connector.airflow.hooks"]}],
        "operators": [{"integration-name": "POLYV", "python-modules": ["polyv_connector.airflow.operators"]}],
        # The operator's links (run page, report, Data Docs). The plugin serving their files is
        # registered through the entry point ``airflow.plugins`` (setup.cfg), which Airflow
        # always loads (a provider's "plugins" load only with lazy_discover_providers off).
        "extra-links": [f"polyv_connector.airflow.links.{name}" for name in EXTRA_LINKS],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "POLYV",
                # Extras: per-account defaults; operator arguments override them per task.
                "conn-fields": {
                    "max_rps": {
                        "label": "Max requests per second",
                        "description": f"Cap on one sync's requests/s (default: the IP budget, {_MAX_RPS:g}). "
                        "POLYV blocks the "
                        "client IP for 5 minutes past 1500 requests per 10 s, for "
                        "every POLYV call from that IP: keep headroom.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_RPS_CEILING},
                    },
                    "batch_size": _integer(
                        "Items per request",
                        f"Viewer values per save request (default and maximum {MAX_BATCH_SIZE}).",
                        1,
                        MAX_BATCH_SIZE,
                    ),
                    "concurrency": _integer(
                        "Requests in flight",
                        f"Parallel save requests of one sync (default {DEFAULTS['concurrency']}).",
                        1,
                        64,
                    ),
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": f"Seconds to wait for POLYV's answer to one request (default {_TIMEOUT:g}).",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {"login": "App ID", "password": "App Secret", "host": "API base URL"},
                    "placeholders": {
                        "login": "appId from the POLYV console",
                        "password": "appSecret (never logged, never written to reports)",
                        "host": "https://api.polyv.net",
                        "max_rps": f"{_MAX_RPS:g}",
                        **{key: f"{DEFAULTS[key]:g}" for key in ("batch_size", "concurrency", "timeout")},
                    },
                },
            }
        ],
    }

"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared here, not in hook methods: since Airflow 3.2 ``conn-fields``
and ``ui-field-behaviour`` are read from this dict without importing the hook (the hook
methods ``get_connection_form_widgets`` / ``get_ui_field_behaviour`` are deprecated).
This module must stay import-free: the scheduler, the API server and every ``airflow``
command call it at start-up.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "polyv-connector"  # must equal the distribution name in setup.cfg
CONN_TYPE = "polyv"
HOOK_CLASS = "polyv_connector.airflow.hooks.PolyvHook"


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
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "POLYV",
                # Extras: per-account defaults; operator arguments override them per task.
                "conn-fields": {
                    "max_rps": {
                        "label": "Max requests per second",
                        "description": "Request budget of one sync (default 100). POLYV blocks the "
                        "client IP for 5 minutes past 1500 requests per 10 s, for "
                        "every POLYV call from that IP: keep headroom.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 140},
                    },
                    "batch_size": _integer(
                        "Items per request", "Viewer values per save request (default and maximum 1000).", 1, 1000
                    ),
                    "concurrency": _integer(
                        "Requests in flight", "Parallel save requests of one sync (default 8).", 1, 64
                    ),
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Seconds to wait for POLYV's answer to one request (default 30).",
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
                        "max_rps": "100",
                        "batch_size": "1000",
                        "concurrency": "8",
                        "timeout": "30",
                    },
                },
            }
        ],
    }

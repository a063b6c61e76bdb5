"""An auth manager for the test stacks: Airflow's ``SimpleAuthManager``, plus users who may read
exactly one DAG (what FAB or Keycloak give a team's role; the simple manager has no per-DAG
permissions of its own).

Named in ``[core] auth_manager`` for every scheduler stack of tests/stack.py (through
:func:`scripts.airflow_stack.running_stack`'s ``auth_manager``); the users come from
:data:`tests.dag_readers.DAG_READERS` and are declared as viewers in ``[core]
simple_auth_manager_users`` (:func:`tests.dag_readers.stack_users`), so ``admin`` stays an
admin and every other test runs as before. Their passwords are in the stack's
``simple_auth_manager_passwords.json.generated``, as for ``admin``.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

from tests.dag_readers import DAG_READERS


class OneDagAuthManager(SimpleAuthManager):
    """The simple auth manager; a user of :data:`DAG_READERS` may read one DAG and no other."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        allowed = DAG_READERS.get(getattr(user, "username", None) or "")
        if allowed is None:
            return bool(
                super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
            )
        return method == "GET" and details is not None and details.id == allowed

"""Credentials and connections: dbt-postgres's, unchanged but for the adapter type and defaults.

Flywheel autocommits every statement (each write is one Delta commit), so connections default to
`autocommit: true`, with which dbt-postgres sends no BEGIN/COMMIT at all."""

from dataclasses import dataclass
from typing import Optional

from dbt.adapters.postgres.connections import PostgresConnectionManager, PostgresCredentials


@dataclass
class FlywheelCredentials(PostgresCredentials):
    password: str = ""
    autocommit: Optional[bool] = True

    @property
    def type(self):
        return "flywheel"


class FlywheelConnectionManager(PostgresConnectionManager):
    TYPE = "flywheel"

"""The Flywheel adapter: dbt-postgres's, with Flywheel's types and none of the pg_catalog work that
Flywheel has no counterpart for (view dependencies, indexes, constraints)."""

from typing import List

from dbt.adapters.base import ConstraintSupport
from dbt.adapters.postgres.impl import PostgresAdapter
from dbt_common.contracts.constraints import ConstraintType

from dbt.adapters.flywheel.connections import FlywheelConnectionManager
from dbt.adapters.flywheel.relation import FlywheelRelation


class FlywheelAdapter(PostgresAdapter):
    Relation = FlywheelRelation
    ConnectionManager = FlywheelConnectionManager

    connections: FlywheelConnectionManager

    # Delta tables have no constraints that a CREATE TABLE ... AS could declare.
    CONSTRAINT_SUPPORT = {
        ConstraintType.check: ConstraintSupport.NOT_SUPPORTED,
        ConstraintType.not_null: ConstraintSupport.NOT_SUPPORTED,
        ConstraintType.unique: ConstraintSupport.NOT_SUPPORTED,
        ConstraintType.primary_key: ConstraintSupport.NOT_SUPPORTED,
        ConstraintType.foreign_key: ConstraintSupport.NOT_SUPPORTED,
    }

    @classmethod
    def type(cls) -> str:
        return "flywheel"

    # Seed column types: what a Delta table holds as it is.
    @classmethod
    def convert_text_type(cls, agate_table, col_idx: int) -> str:
        return "VARCHAR"

    @classmethod
    def convert_number_type(cls, agate_table, col_idx: int) -> str:
        import agate

        decimals = agate_table.aggregate(agate.MaxPrecision(col_idx))
        return "DOUBLE" if decimals else "BIGINT"

    @classmethod
    def convert_integer_type(cls, agate_table, col_idx: int) -> str:
        return "BIGINT"

    @classmethod
    def convert_boolean_type(cls, agate_table, col_idx: int) -> str:
        return "BOOLEAN"

    @classmethod
    def convert_datetime_type(cls, agate_table, col_idx: int) -> str:
        return "TIMESTAMP"

    @classmethod
    def convert_date_type(cls, agate_table, col_idx: int) -> str:
        return "DATE"

    @classmethod
    def convert_time_type(cls, agate_table, col_idx: int) -> str:
        # Delta has no time of day: Flywheel refuses the column by name.
        return "TIME"

    def _link_cached_relations(self, manifest) -> None:
        # dbt-postgres links views to the tables they read (pg_depend), for DROP ... CASCADE.
        # Flywheel has no SQL views and this adapter never drops with CASCADE: nothing to link.
        pass

    def valid_incremental_strategies(self) -> List[str]:
        return ["append", "merge", "delete+insert"]

    @classmethod
    def date_function(cls) -> str:
        return "now()"

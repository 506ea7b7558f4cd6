"""Relations render as "schema"."name": the warehouse is one catalog, `flywheel`, whatever `dbname`
the profile gives, and Flywheel's own DDL (feature views, labels, training sets) takes bare names."""

from dataclasses import dataclass, field
from typing import FrozenSet

from dbt.adapters.base.relation import Policy
from dbt.adapters.contracts.relation import RelationType
from dbt.adapters.postgres.relation import PostgresRelation


@dataclass(frozen=True, eq=False, repr=False)
class FlywheelRelation(PostgresRelation):
    include_policy: Policy = field(
        default_factory=lambda: Policy(database=False, schema=True, identifier=True)
    )
    # Flywheel replaces tables in place (`CREATE OR REPLACE TABLE`: a new Delta version) and has
    # no RENAME: nothing is renamed or swapped.
    renameable_relations: FrozenSet[RelationType] = field(default_factory=frozenset)
    replaceable_relations: FrozenSet[RelationType] = field(
        default_factory=lambda: frozenset({RelationType.Table})  # type: ignore
    )

    def relation_max_name_length(self):
        return 255

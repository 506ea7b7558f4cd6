"""dbt adapter for Flywheel: dbt-postgres's connection code over Flywheel's Postgres front door,
with Flywheel's own materializations (feature_view, label, training_set) and catalog macros."""

from dbt.adapters.base import AdapterPlugin

from dbt.adapters.flywheel.connections import FlywheelConnectionManager, FlywheelCredentials
from dbt.adapters.flywheel.impl import FlywheelAdapter
from dbt.adapters.flywheel.relation import FlywheelRelation
from dbt.include import flywheel

Plugin = AdapterPlugin(
    adapter=FlywheelAdapter,  # type: ignore
    credentials=FlywheelCredentials,
    include_path=flywheel.PACKAGE_PATH,
    dependencies=["postgres"],
)

__all__ = [
    "FlywheelAdapter",
    "FlywheelConnectionManager",
    "FlywheelCredentials",
    "FlywheelRelation",
    "Plugin",
]

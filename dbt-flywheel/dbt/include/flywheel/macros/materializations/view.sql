{#- Flywheel has no SQL views yet. -#}
{% materialization view, adapter='flywheel' %}
  {{ exceptions.raise_compiler_error(
      "Flywheel has no SQL views yet: model `" ~ this.identifier ~ "` is materialized='view' "
      ~ "(dbt's default). Use materialized='table' (a versioned Delta table, rebuilt by every run), "
      ~ "'incremental', 'ephemeral', or 'feature_view' (a materialized, versioned feature view), "
      ~ "e.g. `models: {my_project: {+materialized: table}}` in dbt_project.yml") }}
{% endmaterialization %}

{% materialization materialized_view, adapter='flywheel' %}
  {{ exceptions.raise_compiler_error(
      "Flywheel has no materialized views: model `" ~ this.identifier ~ "` is materialized='materialized_view'. "
      ~ "Use 'table' (rebuilt by every run) or 'feature_view' (refreshed by REFRESH, on a schedule "
      ~ "or incrementally)") }}
{% endmaterialization %}

{#- Snapshots update rows in place (MERGE / UPDATE), which Flywheel does not have. -#}
{% materialization snapshot, adapter='flywheel' %}
  {{ exceptions.raise_compiler_error(
      "Flywheel has no UPDATE or MERGE, which dbt snapshots need (snapshot `" ~ this.identifier ~ "`). "
      ~ "Every table is versioned: read earlier states with `SELECT * FROM t VERSION AS OF n` or "
      ~ "`TIMESTAMP AS OF '...'`") }}
{% endmaterialization %}

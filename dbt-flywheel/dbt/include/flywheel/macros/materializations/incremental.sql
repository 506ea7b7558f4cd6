{#- `incremental` without DELETE, UPDATE or MERGE:
    - append: `INSERT INTO x (cols) SELECT cols FROM (<sql>)`, one new Delta version;
    - merge / delete+insert (a `unique_key`, one column or several): one
      `CREATE OR REPLACE TABLE x AS` the rows of x whose key the new rows do not have (an anti join,
      `NOT EXISTS`), `UNION ALL` the new rows: one new Delta version, older ones readable by time travel.
    The first run, `--full-refresh`, or a name held by a feature view, label or training set:
    `CREATE OR REPLACE TABLE x AS <sql>`. -#}

{% macro flywheel_incremental_append_sql(target_relation, sql, dest_columns) -%}
  {%- set cols = dest_columns | map(attribute='quoted') | join(', ') -%}
  insert into {{ target_relation }} ({{ cols }})
  select {{ cols }} from (
  {{ sql }}
  ) as dbt_internal_source
{%- endmacro %}

{% macro flywheel_incremental_merge_sql(target_relation, sql, unique_key, dest_columns, incremental_predicates) -%}
  {%- set cols = dest_columns | map(attribute='quoted') | join(', ') -%}
  {%- set keys = [unique_key] if unique_key is string else unique_key -%}
  {%- set predicates = [] if incremental_predicates is none
        else ([incremental_predicates] if incremental_predicates is string else incremental_predicates) -%}
  create or replace table {{ target_relation }} as
  with dbt_internal_source as (
  {{ sql }}
  )
  select {{ cols }} from {{ target_relation }} as dbt_internal_dest
  where not exists (
    select 1 from dbt_internal_source
    where {% for key in keys -%}
      dbt_internal_source.{{ key }} = dbt_internal_dest.{{ key }}{% if not loop.last %} and {% endif %}
    {%- endfor %}
    {%- for predicate in predicates %}
      and {{ predicate }}
    {%- endfor %}
  )
  union all
  select {{ cols }} from dbt_internal_source
{%- endmacro %}

{% materialization incremental, adapter='flywheel' -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set unique_key = config.get('unique_key') -%}
  {%- set strategy = config.get('incremental_strategy') or ('merge' if unique_key else 'append') -%}
  {%- set on_schema_change = config.get('on_schema_change') or 'ignore' -%}
  {%- set incremental_predicates = config.get('predicates', none) or config.get('incremental_predicates', none) -%}

  {% if strategy not in ['append', 'merge', 'delete+insert'] %}
    {{ exceptions.raise_compiler_error(
        "Flywheel supports the incremental strategies append, merge and delete+insert (both as one "
        ~ "CREATE OR REPLACE TABLE over an anti join), not `" ~ strategy ~ "`") }}
  {% endif %}
  {% if strategy != 'append' and not unique_key %}
    {{ exceptions.raise_compiler_error(
        "incremental_strategy `" ~ strategy ~ "` needs a unique_key (model `" ~ this.identifier ~ "`)") }}
  {% endif %}
  {% if on_schema_change != 'ignore' %}
    {{ exceptions.raise_compiler_error(
        "Flywheel's incremental models support on_schema_change='ignore' only (model `"
        ~ this.identifier ~ "`); run with --full-refresh to take a new schema") }}
  {% endif %}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% if existing_relation is none or should_full_refresh() or not existing_relation.is_table %}
    {% if existing_relation is not none and not existing_relation.is_table %}
      {{ adapter.drop_relation(existing_relation) }}
    {% endif %}
    {% set build_sql = get_create_table_as_sql(False, target_relation, sql) %}
  {% else %}
    {% set dest_columns = adapter.get_columns_in_relation(existing_relation) %}
    {% if strategy == 'append' %}
      {% set build_sql = flywheel_incremental_append_sql(target_relation, sql, dest_columns) %}
    {% else %}
      {% set build_sql = flywheel_incremental_merge_sql(
          target_relation, sql, unique_key, dest_columns, incremental_predicates) %}
    {% endif %}
  {% endif %}

  {% call statement('main') %}
    {{ build_sql }}
  {% endcall %}

  {% do persist_docs(target_relation, model) %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}

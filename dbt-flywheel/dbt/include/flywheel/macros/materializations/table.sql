{#- `table`: one statement, `CREATE OR REPLACE TABLE x AS <sql>`, one new Delta version of the same
    table (older versions stay readable with `VERSION AS OF n`): no temporary relation, no rename. -#}

{% macro flywheel__create_table_as(temporary, relation, sql) -%}
  {%- if temporary -%}
    {{ exceptions.raise_compiler_error("Flywheel has no temporary tables (" ~ relation ~ ")") }}
  {%- endif -%}
  {%- set sql_header = config.get('sql_header', none) -%}
  {{ sql_header if sql_header is not none }}
  create or replace table {{ relation }} as
  {{ sql }}
{%- endmacro %}

{% materialization table, adapter='flywheel' %}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {#- A feature view, label or training set of this name goes first (its own DROP). -#}
  {% if existing_relation is not none and not existing_relation.is_table %}
    {{ adapter.drop_relation(existing_relation) }}
  {% endif %}

  {% call statement('main') -%}
    {{ get_create_table_as_sql(False, target_relation, sql) }}
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}

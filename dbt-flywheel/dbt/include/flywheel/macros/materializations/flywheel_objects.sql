{#- Flywheel's own objects as materializations. Each run is one `CREATE OR REPLACE ...` statement:
    a new definition version and a new version of the object's Delta table. Config values that name
    things (entity, event_time, label, features) are SQL identifiers, written as in Flywheel's SQL. -#}

{#- A string as a SQL literal. -#}
{% macro flywheel_literal(value) -%}
  '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{#- `WITH (online = ..., refresh = '...')` from the model's config, or nothing. -#}
{% macro flywheel_with_options(online=none, refresh=none) -%}
  {%- set options = [] -%}
  {%- if online is not none -%}
    {%- do options.append('online = ' ~ ('true' if online else 'false')) -%}
  {%- endif -%}
  {%- if refresh is not none -%}
    {%- do options.append('refresh = ' ~ flywheel_literal(refresh)) -%}
  {%- endif -%}
  {%- if options -%} with ({{ options | join(', ') }}) {%- endif -%}
{%- endmacro %}

{#- `TTL INTERVAL '30 days'` from ttl='30 days' (or ttl="INTERVAL '30 days'"), or nothing. -#}
{% macro flywheel_ttl(ttl) -%}
  {%- if ttl is not none -%}
    {%- set text = ttl | string | trim -%}
    ttl {{ text if (text | lower).startswith('interval') else 'interval ' ~ flywheel_literal(text) }}
  {%- endif -%}
{%- endmacro %}

{#- The object that holds `relation`'s name, if it is not already one of `kind`, goes first. -#}
{% macro flywheel_drop_other_kind(relation, kind) %}
  {% if relation is not none %}
    {% set existing_kind = flywheel_object_kind(relation) %}
    {% if existing_kind is not none and existing_kind != kind %}
      {{ adapter.drop_relation(relation) }}
    {% endif %}
  {% endif %}
{% endmacro %}

{#- The shared body: hooks, the one statement, the relation dbt caches. -#}
{% macro flywheel_materialize_object(kind, create_sql) %}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='materialized_view') -%}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% do flywheel_drop_other_kind(existing_relation, kind) %}
  {% call statement('main') -%}
    {{ create_sql }}
  {%- endcall %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmacro %}

{#- config(materialized='feature_view', entity='user', event_time='ts', ttl='30 days', online=true,
           refresh='on change') -#}
{% materialization feature_view, adapter='flywheel' %}
  {% set create_sql %}
create or replace feature view {{ flywheel_name(this) }}
  entity {{ config.require('entity') }} event time {{ config.require('event_time') }}
  {{ flywheel_ttl(config.get('ttl')) }}
  {{ flywheel_with_options(config.get('online'), config.get('refresh')) }}
as (
{{ sql }}
)
  {% endset %}
  {{ return(flywheel_materialize_object('feature_view', create_sql)) }}
{% endmaterialization %}

{#- config(materialized='label', entity='user', event_time='ts', refresh='on change') -#}
{% materialization label, adapter='flywheel' %}
  {% set create_sql %}
create or replace label {{ flywheel_name(this) }}
  entity {{ config.require('entity') }} event time {{ config.require('event_time') }}
  {{ flywheel_with_options(refresh=config.get('refresh')) }}
from (
{{ sql }}
)
  {% endset %}
  {{ return(flywheel_materialize_object('label', create_sql)) }}
{% endmaterialization %}

{#- config(materialized='training_set', label='is_fraud', features=['user_txn', 'merchant_txn.amount'])
    The model's body is not run: it holds `-- depends_on: {{ ref('is_fraud') }}` lines (or any
    ref() calls) so that dbt builds the label and feature views first. -#}
{% materialization training_set, adapter='flywheel' %}
  {%- set features = config.require('features') -%}
  {%- set features = features.split(',') if features is string else features -%}
  {% if (features | length) == 0 %}
    {{ exceptions.raise_compiler_error("training set `" ~ this.identifier ~ "` needs at least one feature view in `features`") }}
  {% endif %}
  {% set create_sql %}
create or replace training set {{ flywheel_name(this) }}
  label {{ config.require('label') }}
  features {{ features | map('trim') | join(', ') }}
  {{ flywheel_with_options(refresh=config.get('refresh')) }}
  {% endset %}
  {{ return(flywheel_materialize_object('training_set', create_sql)) }}
{% endmaterialization %}

{#- Relations, schemas and columns from information_schema (DataFusion's) and Flywheel's system
    tables, instead of dbt-postgres's pg_catalog queries. -#}

{#- The Postgres name of an Arrow type as information_schema.columns states it. -#}
{% macro flywheel_sql_type(data_type) -%}
  case
    when {{ data_type }} = 'Int64' then 'bigint'
    when {{ data_type }} = 'Int32' then 'integer'
    when {{ data_type }} in ('Int16', 'Int8') then 'smallint'
    when {{ data_type }} = 'Float64' then 'double precision'
    when {{ data_type }} in ('Float32', 'Float16') then 'real'
    when {{ data_type }} in ('Utf8', 'Utf8View', 'LargeUtf8') then 'text'
    when {{ data_type }} = 'Boolean' then 'boolean'
    when {{ data_type }} in ('Date32', 'Date64') then 'date'
    when {{ data_type }} like 'Timestamp%' and {{ data_type }} like '%,%' and {{ data_type }} not like '%None%'
      then 'timestamp with time zone'
    when {{ data_type }} like 'Timestamp%' then 'timestamp without time zone'
    when {{ data_type }} like 'Decimal%' then 'numeric'
    when {{ data_type }} in ('Binary', 'BinaryView', 'LargeBinary') then 'bytea'
    else {{ data_type }}
  end
{%- endmacro %}

{#- What a name in the warehouse is: 'table', 'feature_view', 'label', 'training_set', or none. -#}
{% macro flywheel_object_kind(relation) %}
  {% if relation is none or relation.identifier is none %}
    {{ return(none) }}
  {% endif %}
  {% set rows = run_query(
      "select coalesce(object, 'table') as kind from flywheel.tables where name = '"
      ~ (relation.identifier | replace("'", "''")) ~ "'") %}
  {% if rows is none or (rows.rows | length) == 0 %}
    {{ return(none) }}
  {% endif %}
  {{ return(rows.rows[0][0]) }}
{% endmacro %}

{#- A relation's name in Flywheel's DDL: bare (quoted), and only in schema `public`. -#}
{% macro flywheel_name(relation) -%}
  {%- if relation.schema is not none and (relation.schema | lower) != 'public' -%}
    {{ exceptions.raise_compiler_error(
        "Flywheel keeps every table in schema `public`; `" ~ relation.identifier ~ "` is configured for schema `"
        ~ relation.schema ~ "` (drop the model's `schema` config and use schema: public in the profile)") }}
  {%- endif -%}
  {{ adapter.quote(relation.identifier) if relation.quote_policy.identifier else relation.identifier }}
{%- endmacro %}

{% macro flywheel__list_relations_without_caching(schema_relation) %}
  {% call statement('list_relations_without_caching', fetch_result=True) -%}
    select
      '{{ schema_relation.database }}' as database,
      t.table_name as name,
      t.table_schema as schema,
      case
        when f.object is not null then 'materialized_view'
        when t.table_type = 'VIEW' then 'view'
        else 'table'
      end as type
    from information_schema.tables as t
    left join flywheel.tables as f
      on t.table_schema = 'public' and f.name = t.table_name
    where t.table_schema ilike '{{ schema_relation.schema }}'
  {% endcall %}
  {{ return(load_result('list_relations_without_caching').table) }}
{% endmacro %}

{% macro flywheel__get_columns_in_relation(relation) -%}
  {% call statement('get_columns_in_relation', fetch_result=True) %}
    select
      column_name,
      {{ flywheel_sql_type('data_type') }} as data_type,
      cast(character_maximum_length as bigint) as character_maximum_length,
      cast(case when data_type like 'Decimal%' then numeric_precision end as bigint) as numeric_precision,
      cast(case when data_type like 'Decimal%' then numeric_scale end as bigint) as numeric_scale
    from information_schema.columns
    where table_name = '{{ relation.identifier }}'
      {% if relation.schema %}
      and table_schema = '{{ relation.schema }}'
      {% endif %}
    order by ordinal_position
  {% endcall %}
  {% set table = load_result('get_columns_in_relation').table %}
  {{ return(sql_convert_columns_in_relation(table)) }}
{% endmacro %}

{% macro flywheel__list_schemas(database) %}
  {% call statement('list_schemas', fetch_result=True, auto_begin=False) %}
    select distinct schema_name from information_schema.schemata
  {% endcall %}
  {{ return(load_result('list_schemas').table) }}
{% endmacro %}

{% macro flywheel__check_schema_exists(information_schema, schema) -%}
  {% call statement('check_schema_exists', fetch_result=True, auto_begin=False) %}
    select count(*) from information_schema.schemata where schema_name = '{{ schema }}'
  {% endcall %}
  {{ return(load_result('check_schema_exists').table) }}
{% endmacro %}

{#- Flywheel has one schema for tables, `public` (and its system schema `flywheel`). -#}
{% macro flywheel__create_schema(relation) -%}
  {% if (relation.schema | lower) != 'public' %}
    {{ exceptions.raise_compiler_error(
        "Flywheel keeps every table in schema `public` and cannot create schema `" ~ relation.schema
        ~ "`: set schema: public in profiles.yml and remove `schema` configs from models and seeds") }}
  {% endif %}
{% endmacro %}

{% macro flywheel__drop_schema(relation) -%}
  {{ exceptions.raise_compiler_error(
      "Flywheel cannot drop schema `" ~ relation.schema ~ "`: drop its tables one by one") }}
{% endmacro %}

{#- DROP by what the name is in Flywheel (a table, feature view, label or training set), never
    CASCADE: dropping a table that feature views read is refused, naming them. -#}
{% macro flywheel__get_drop_sql(relation) -%}
  {%- set kind = flywheel_object_kind(relation) -%}
  {%- set words = {'feature_view': 'feature view', 'label': 'label', 'training_set': 'training set'} -%}
  drop {{ words.get(kind, 'table') }} if exists {{ flywheel_name(relation) }}
{%- endmacro %}

{% macro flywheel__drop_relation(relation) -%}
  {% call statement('drop_relation', auto_begin=False) -%}
    {{ flywheel__get_drop_sql(relation) }}
  {%- endcall %}
{% endmacro %}

{#- No TRUNCATE: an empty new version of the table, older ones readable by time travel. -#}
{% macro flywheel__truncate_relation(relation) -%}
  {% call statement('truncate_relation') -%}
    create or replace table {{ relation }} as select * from {{ relation }} where false
  {%- endcall %}
{% endmacro %}

{% macro flywheel__rename_relation(from_relation, to_relation) -%}
  {{ exceptions.raise_compiler_error(
      "Flywheel cannot rename `" ~ from_relation.identifier ~ "` to `" ~ to_relation.identifier
      ~ "`: tables are replaced in place (CREATE OR REPLACE TABLE, a new Delta version)") }}
{% endmacro %}

{#- Flywheel has no COMMENT ON: descriptions stay in dbt's docs. -#}
{% macro flywheel__persist_docs(relation, model, for_relation, for_columns) -%}
  {% if config.persist_relation_docs() or config.persist_column_docs() %}
    {{ log("Flywheel has no table or column comments: persist_docs is ignored for " ~ relation, info=False) }}
  {% endif %}
{% endmacro %}

{% macro flywheel__current_timestamp() -%}
  now()
{%- endmacro %}

{% macro flywheel__information_schema_name(database) -%}
  information_schema
{%- endmacro %}

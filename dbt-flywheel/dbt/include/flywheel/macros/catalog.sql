{#- `dbt docs generate`: information_schema.tables and .columns, with each Flywheel object's kind
    (FEATURE VIEW, LABEL, TRAINING SET) from flywheel.tables as its table type. -#}

{% macro flywheel__get_catalog_relations(information_schema, relations) -%}
  {%- call statement('catalog', fetch_result=True) -%}
    select
      '{{ information_schema.database }}' as table_database,
      t.table_schema as table_schema,
      t.table_name as table_name,
      case
        when f.object is not null then upper(replace(f.object, '_', ' '))
        else t.table_type
      end as table_type,
      cast(null as varchar) as table_comment,
      c.column_name as column_name,
      cast(c.ordinal_position as bigint) as column_index,
      {{ flywheel_sql_type('c.data_type') }} as column_type,
      cast(null as varchar) as column_comment,
      cast(null as varchar) as table_owner
    from information_schema.tables as t
    join information_schema.columns as c
      on c.table_schema = t.table_schema and c.table_name = t.table_name
    left join flywheel.tables as f
      on t.table_schema = 'public' and f.name = t.table_name
    where (
      {%- for relation in relations -%}
        {%- if relation.identifier -%}
          (upper(t.table_schema) = upper('{{ relation.schema }}') and
           upper(t.table_name) = upper('{{ relation.identifier }}'))
        {%- else -%}
          upper(t.table_schema) = upper('{{ relation.schema }}')
        {%- endif -%}
        {%- if not loop.last %} or {% endif -%}
      {%- endfor -%}
    )
    order by t.table_schema, t.table_name, column_index
  {%- endcall -%}
  {{ return(load_result('catalog').table) }}
{%- endmacro %}

{% macro flywheel__get_catalog(information_schema, schemas) -%}
  {%- set relations = [] -%}
  {%- for schema in schemas -%}
    {%- do relations.append({'schema': schema}) -%}
  {%- endfor -%}
  {{ return(flywheel__get_catalog_relations(information_schema, relations)) }}
{%- endmacro %}

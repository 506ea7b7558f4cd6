{#- `CREATE ENTITY IF NOT EXISTS name (key TYPE, ...)`, for `on-run-start`:
      on-run-start:
        - "{{ flywheel_create_entity('user', {'user_id': 'BIGINT'}) }}"
        - "{{ flywheel_create_entity('merchant_user', [['merchant_id', 'VARCHAR'], ['user_id', 'BIGINT']]) }}"
    `keys`: a mapping of key column to type, a list of [column, type] pairs, or the text
    'user_id BIGINT'. `or_replace=true` replaces an existing definition instead (a new version). -#}
{% macro flywheel_create_entity(name, keys, or_replace=false) -%}
  {%- if keys is string -%}
    {%- set columns = keys -%}
  {%- else -%}
    {%- set pairs = keys.items() if keys is mapping else keys -%}
    {%- set parts = [] -%}
    {%- for column, type in pairs -%}
      {%- do parts.append(column ~ ' ' ~ type) -%}
    {%- endfor -%}
    {%- set columns = parts | join(', ') -%}
  {%- endif -%}
  create {{ 'or replace ' if or_replace }}entity {{ '' if or_replace else 'if not exists ' }}{{ name }} ({{ columns }})
{%- endmacro %}

{{ config(materialized='feature_view', entity='user', event_time='ts', ttl='30 days', online=true) }}

select user_id, ts, amount as last_amount
from {{ ref('stg_transactions') }}

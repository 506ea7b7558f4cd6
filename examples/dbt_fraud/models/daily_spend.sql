-- Spend per user and day. Incremental with a two-column unique_key: each run recomputes the days
-- from the latest one already in the table on, and replaces those rows (merge).
{{ config(materialized='incremental', unique_key=['user_id', 'day']) }}

select
    user_id,
    date_trunc('day', ts) as day,
    count(*) as txn_count,
    sum(amount) as spend,
    max(ts) as last_ts
from {{ ref('stg_transactions') }}
{% if is_incremental() %}
where date_trunc('day', ts) >= (select max(day) from {{ this }})
{% endif %}
group by 1, 2

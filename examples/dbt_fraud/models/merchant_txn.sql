{{ config(materialized='feature_view', entity='merchant', event_time='ts') }}

select merchant_id, ts, amount as merchant_last_amount
from {{ ref('stg_transactions') }}

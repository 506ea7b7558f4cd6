{{ config(materialized='label', entity='user', event_time='ts') }}

select user_id, merchant_id, ts, is_fraud
from {{ ref('chargebacks') }}

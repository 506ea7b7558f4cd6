-- Every transaction once, appended as it arrives: incremental without a unique_key (append), one
-- INSERT (one new Delta version) per run.
{{ config(materialized='incremental') }}

select txn_id, user_id, merchant_id, ts, amount
from {{ ref('stg_transactions') }}
{% if is_incremental() %}
where txn_id > (select max(txn_id) from {{ this }})
{% endif %}

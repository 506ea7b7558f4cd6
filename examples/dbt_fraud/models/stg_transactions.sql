-- The raw events, cleaned: a table, one new Delta version per run.
-- In this example `dbt seed` lands the raw events; the ref puts the seed first in `dbt build`:
-- depends_on: {{ ref('transactions') }}
select
    txn_id,
    user_id,
    merchant_id,
    ts,
    amount
from {{ source('raw', 'transactions') }}
where amount > 0

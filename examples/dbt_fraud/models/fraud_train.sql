{{ config(materialized='training_set', label='is_fraud', features=['user_txn', 'merchant_txn']) }}

-- A training set is defined by its label and feature views (the config above); this body is not
-- run. The refs tell dbt to build them first:
-- depends_on: {{ ref('is_fraud') }}
-- depends_on: {{ ref('user_txn') }}
-- depends_on: {{ ref('merchant_txn') }}

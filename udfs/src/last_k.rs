//! `last_k(value, k)`: the `k` most recent non-NULL values, newest first, as a list (Chronon's
//! LAST_K). "Most recent" is the order the rows reach the aggregate:
//!
//! - as an aggregate feature of a feature view (`last_k(merchant, 10) OVER (RANGE INTERVAL
//!   '30 days' PRECEDING)`), the engine evaluates it over each key's events in time order;
//! - as a window function, the window's `ORDER BY` orders it:
//!   `last_k(item, 3) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)`;
//! - as a plain aggregate (`GROUP BY`), the rows come in no defined order.
//!
//! No non-NULL value gives NULL. `k` is an integer literal from 1 to [`MAX_K`].

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;

/// The largest `k`.
pub const MAX_K: usize = 1_000;

/// The `last_k` aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LastK {
    signature: Signature,
}

impl Default for LastK {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn list_of(item: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item.clone(), true)))
}

/// `k` from the second argument, a literal from 1 to [`MAX_K`].
fn k_of(args: &AccumulatorArgs) -> Result<usize> {
    let literal = args
        .exprs
        .get(1)
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(|l| l.value().clone());
    let k = match literal {
        Some(v) if v.data_type().is_integer() => {
            v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                ScalarValue::Int64(Some(k)) => usize::try_from(k).ok(),
                _ => None,
            })
        }
        _ => None,
    };
    match k.filter(|k| (1..=MAX_K).contains(k)) {
        Some(k) => Ok(k),
        None => plan_err!("last_k(value, k): k must be an integer literal from 1 to {MAX_K}"),
    }
}

impl AggregateUDFImpl for LastK {
    fn name(&self) -> &str {
        "last_k"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) => Ok(list_of(t)),
            None => plan_err!("last_k(value, k) takes two arguments"),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LastKAccumulator::new(&args, false)?))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LastKAccumulator::new(&args, true)?))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args
            .input_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            list_of(&item),
            true,
        ))])
    }
}

#[derive(Debug)]
struct LastKAccumulator {
    k: usize,
    item: DataType,
    /// Oldest first. A sliding accumulator keeps every value of its frame (the frame's oldest
    /// are retracted first); any other keeps the newest `k`.
    values: VecDeque<ScalarValue>,
    sliding: bool,
}

impl LastKAccumulator {
    fn new(args: &AccumulatorArgs, sliding: bool) -> Result<Self> {
        let item = match args.return_type() {
            DataType::List(f) => f.data_type().clone(),
            other => other.clone(),
        };
        Ok(Self {
            k: k_of(args)?,
            item,
            values: VecDeque::new(),
            sliding,
        })
    }

    fn push(&mut self, array: &ArrayRef) -> Result<()> {
        for i in 0..array.len() {
            if array.is_valid(i) {
                self.values
                    .push_back(ScalarValue::try_from_array(array, i)?);
                if !self.sliding && self.values.len() > self.k {
                    self.values.pop_front();
                }
            }
        }
        Ok(())
    }
}

impl Accumulator for LastKAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.push(v),
            None => Ok(()),
        }
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            for _ in 0..v.len() - v.null_count() {
                self.values.pop_front();
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.values.is_empty() {
            return ScalarValue::try_from(&list_of(&self.item));
        }
        let newest: Vec<ScalarValue> = self.values.iter().rev().take(self.k).cloned().collect();
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &newest, &self.item,
        )))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.values.iter().map(ScalarValue::size).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let start = self.values.len().saturating_sub(self.k);
        let kept: Vec<ScalarValue> = self.values.iter().skip(start).cloned().collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &kept, &self.item,
        ))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return Ok(());
        };
        let lists = lists.as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.push(&lists.value(i))?;
            }
        }
        Ok(())
    }
}

//! Built-in functions whose output size the caller picks, bounded.
//!
//! `repeat('x', 2000000000)` asks DataFusion for a 2 GB string, allocated outside the memory pool
//! that `memory_limit` bounds: one statement could take the machine's memory. [`BoundedUdf`] wraps
//! such a built-in (`repeat`, `lpad`, `rpad`, `array_repeat`, `range`, `generate_series`) and, before
//! calling it, computes from its arguments how much one call would produce over all the rows of
//! its batch; past [`MAX_OUTPUT_BYTES`] the call fails with an error naming the function and the
//! limit, and nothing is allocated. Everything else (signature, return type, simplification) is the
//! built-in's own; constant calls are folded at planning, so an oversized constant is refused
//! before the statement runs.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// The most bytes one call of a bounded function may produce (over all rows of its batch).
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;

/// How a bounded function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sizing {
    /// `repeat(s, n)`: `len(s) * n` bytes.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad(...)`: `n` characters, up to 4 bytes each.
    Pad,
    /// `array_repeat(x, n)`: `n` elements, 8 bytes or more each.
    ArrayRepeat,
    /// `range(start, stop [, step])`, `generate_series(...)`: `(stop - start) / step` elements of 8
    /// bytes (integer arguments; dates and timestamps step by intervals and are not sized).
    Range,
}

/// The built-in functions bounded, by name.
pub const BOUNDED: [(&str, Sizing); 6] = [
    ("repeat", Sizing::Repeat),
    ("lpad", Sizing::Pad),
    ("rpad", Sizing::Pad),
    ("array_repeat", Sizing::ArrayRepeat),
    ("range", Sizing::Range),
    ("generate_series", Sizing::Range),
];

/// A built-in function refusing calls that would produce more than [`MAX_OUTPUT_BYTES`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BoundedUdf {
    inner: Arc<ScalarUDF>,
    sizing: Sizing,
}

impl BoundedUdf {
    pub fn new(inner: Arc<ScalarUDF>, sizing: Sizing) -> Self {
        Self { inner, sizing }
    }

    /// The bytes one call over `args` (of `rows` rows) would produce, saturating.
    fn output_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<u64> {
        let count = |i: usize| -> Result<Option<Int64Array>> {
            args.get(i).map(|a| integers(a, rows)).transpose()
        };
        let total = |values: &Int64Array, per: &dyn Fn(usize, u64) -> u64| -> u64 {
            (0..values.len())
                .filter(|&i| values.is_valid(i))
                .map(|i| per(i, u64::try_from(values.value(i)).unwrap_or(0)))
                .fold(0u64, u64::saturating_add)
        };
        Ok(match self.sizing {
            Sizing::Repeat => {
                let (Some(counts), Some(text)) = (count(1)?, args.first()) else {
                    return Ok(0);
                };
                let lengths = string_lengths(text, rows)?;
                total(&counts, &|i, n| {
                    let len = lengths
                        .as_ref()
                        .filter(|l| l.is_valid(i))
                        .map_or(0, |l| u64::try_from(l.value(i)).unwrap_or(0));
                    len.saturating_mul(n)
                })
            }
            Sizing::Pad => match count(1)? {
                Some(n) => total(&n, &|_, n| n.saturating_mul(4)),
                None => 0,
            },
            Sizing::ArrayRepeat => match count(1)? {
                Some(n) => total(&n, &|_, n| n.saturating_mul(8)),
                None => 0,
            },
            Sizing::Range => {
                if !args.iter().all(|a| a.data_type().is_integer()) {
                    return Ok(0);
                }
                let (start, stop, step) = match args.len() {
                    1 => (None, count(0)?, None),
                    2 => (count(0)?, count(1)?, None),
                    _ => (count(0)?, count(1)?, count(2)?),
                };
                let Some(stop) = stop else { return Ok(0) };
                let mut bytes = 0u64;
                for i in 0..stop.len() {
                    let at = |a: &Option<Int64Array>, default: i64| {
                        a.as_ref()
                            .filter(|a| a.is_valid(i))
                            .map_or(default, |a| a.value(i))
                    };
                    let (from, to, by) = (at(&start, 0), stop.value(i), at(&step, 1));
                    if by == 0 || !stop.is_valid(i) {
                        continue;
                    }
                    let span = (i128::from(to) - i128::from(from)) / i128::from(by);
                    let elements = u64::try_from(span.max(0)).unwrap_or(u64::MAX);
                    bytes = bytes.saturating_add(elements.saturating_mul(8));
                }
                bytes
            }
        })
    }
}

/// An integer argument as one Int64 value per row.
fn integers(value: &ColumnarValue, rows: usize) -> Result<Int64Array> {
    let array = value.to_array(rows)?;
    let cast = arrow::compute::cast(&array, &DataType::Int64)?;
    Ok(cast
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::from(vec![None; rows])))
}

/// The byte length of each row of a string argument (`None` when it is not a string).
fn string_lengths(value: &ColumnarValue, rows: usize) -> Result<Option<Int64Array>> {
    if let ColumnarValue::Scalar(s) = value {
        let len = match s {
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                v.as_ref().map(|v| v.len() as i64)
            }
            _ => return Ok(None),
        };
        return Ok(Some(Int64Array::from(vec![len; rows])));
    }
    let array: ArrayRef = value.to_array(rows)?;
    if !matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Ok(None);
    }
    let lengths = arrow::compute::kernels::length::length(&array)?;
    let lengths = arrow::compute::cast(&lengths, &DataType::Int64)?;
    Ok(lengths.as_any().downcast_ref::<Int64Array>().cloned())
}

impl ScalarUDFImpl for BoundedUdf {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.output_bytes(&args.args, args.number_rows)?;
        if bytes > MAX_OUTPUT_BYTES {
            return exec_err!(
                "{}() would produce {bytes} bytes in one call; the most one call may produce is \
                 {MAX_OUTPUT_BYTES} bytes ({} MiB): ask for less, or build the value in steps",
                self.name(),
                MAX_OUTPUT_BYTES >> 20
            );
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<(), String> {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        df.collect().await.map(|_| ()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn oversized_calls_are_refused_and_small_ones_answer() {
        let ctx = SessionContext::new();
        crate::register_all(&ctx);
        for sql in [
            "SELECT length(repeat('x', 2000000000))",
            "SELECT lpad('x', 2000000000)",
            "SELECT array_repeat(1, 1000000000)",
            "SELECT range(0, 10000000000)",
            "SELECT repeat(c, 100000000) FROM (VALUES ('abc'), ('def')) t(c)",
        ] {
            let e = run(&ctx, sql).await.expect_err(sql);
            assert!(e.contains("the most one call may produce"), "{sql}: {e}");
        }
        let answer = ctx
            .sql("SELECT repeat('ab', 3) AS r, lpad('x', 3, '-') AS p, cardinality(range(5)) AS n")
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let text = arrow::util::pretty::pretty_format_batches(&answer)
            .expect("prints")
            .to_string();
        assert!(text.contains("| ababab | --x | 5 |"), "{text}");
    }
}

//! The marker function that carries an `ASOF JOIN`'s match condition from the AST to the analyzer.

use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The marker's SQL name; not meant to be called by users.
pub const ASOF_MATCH_FN: &str = "__flywheel_asof_match";

/// `__flywheel_asof_match(<match condition>)`: a boolean identity that only marks where an
/// `ASOF JOIN` was. The analyzer removes it; evaluating it means the join was not planned.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AsOfMatchUdf {
    signature: Signature,
}

impl Default for AsOfMatchUdf {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Boolean], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AsOfMatchUdf {
    fn name(&self) -> &str {
        ASOF_MATCH_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{ASOF_MATCH_FN} is internal to ASOF JOIN and cannot be evaluated; write the join as \
             `a ASOF JOIN b MATCH_CONDITION (a.t >= b.t) ON a.k = b.k`"
        )
    }
}

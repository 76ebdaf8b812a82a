//! CEL as the API server evaluates it for webhook `matchConditions` and CRD
//! `x-kubernetes-validations`: JSON values bound to variable names, one expression at a time.

use serde_json::Value;

/// A context with each `(name, value)` bound; the error names the variable that did not convert.
pub(super) fn context(variables: &[(&str, &Value)]) -> Result<cel::Context<'static, 'static>, String> {
    let mut context = cel::Context::default();
    for (name, value) in variables {
        let value = cel::to_value(*value).map_err(|e| format!("{name}: {e}"))?;
        context.add_variable_from_value(*name, value);
    }
    Ok(context)
}

/// Compiles and runs `expression`: its value, or why it could not be compiled or run.
pub(super) fn evaluate(expression: &str, context: &cel::Context<'_, '_>) -> Result<cel::Value, String> {
    cel::Program::compile(expression)
        .map_err(|e| e.to_string())
        .and_then(|program| program.execute(context).map_err(|e| e.to_string()))
}

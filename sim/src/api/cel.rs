//! CEL as the API server evaluates it for webhook `matchConditions` and CRD
//! `x-kubernetes-validations`: JSON values bound to variable names, one expression at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
    let program = compiled(expression);
    match program.as_ref() {
        Ok(program) => program.execute(context).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    }
}

/// Every expression compiled in this process, by its text.
static COMPILED: Mutex<BTreeMap<String, Arc<Result<cel::Program, String>>>> = Mutex::new(BTreeMap::new());

/// `expression` compiled, once per process, on a thread of its own.
///
/// The CEL parser (ANTLR) keeps process-wide caches that it fills as it meets new input, making
/// std `HashMap`s as it goes; a map made on a world's thread moves the keys of every later map
/// there (std adds one to the thread's keys for each), so the first world of a process, which
/// filled the caches, iterated its maps in another order than later worlds. Compiled elsewhere,
/// the parser makes no map on a world's thread.
fn compiled(expression: &str) -> Arc<Result<cel::Program, String>> {
    let mut programs = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(program) = programs.get(expression) {
        return program.clone();
    }
    let program =
        std::thread::scope(|scope| scope.spawn(|| cel::Program::compile(expression).map_err(|e| e.to_string())).join())
            .unwrap_or_else(|_| Err("the CEL compiler panicked".to_string()));
    let program = Arc::new(program);
    programs.insert(expression.to_string(), program.clone());
    program
}

//! The Python value model: what `json.loads` makes of a record's args, and CPython's
//! `str()`, `repr()` and `ascii()` of each value, byte for byte.
//!
//! Everything that prints a value writes through [`Out`](crate::format::Out), so the same
//! code both measures (a counting sink) and renders (a bounded buffer): nothing is ever
//! built only to find out that it is too large.

use indexmap::IndexMap;
use num_bigint::BigInt;

use crate::format::{Out, Reject};

/// A Python int. Small values stay inline; `Big` only holds values outside `i64`.
#[derive(Clone, Debug, PartialEq)]
pub enum Int {
    Small(i64),
    Big(BigInt),
}

/// A Python value as `json.loads` makes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(Int),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// Insertion-ordered; a duplicate key keeps its first position and its last value.
    Dict(IndexMap<String, Value>),
}

impl Value {
    /// Python's type name, as CPython's error messages spell it (`int`, `str`, `NoneType`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }
}

/// CPython's `str(v)`.
pub fn write_str(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    let _ = (v, out);
    todo!("value::write_str")
}

/// CPython's `repr(v)`.
pub fn write_repr(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    let _ = (v, out);
    todo!("value::write_repr")
}

/// CPython's `ascii(v)`.
pub fn write_ascii(v: &Value, out: &mut dyn Out) -> Result<(), Reject> {
    let _ = (v, out);
    todo!("value::write_ascii")
}

use super::*;
use crate::value::{Int, Value};
use indexmap::IndexMap;

fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}

fn i(n: i64) -> Value {
    Value::Int(Int::Small(n))
}

fn fmt(msg: &str, args: &[Value]) -> Result<String, String> {
    render(msg, Args::Tuple(args), &Limits::default()).map_err(|e| e.detail())
}

#[test]
fn brace_literals_and_auto_numbering_render_like_cpython() {
    assert_eq!(
        fmt("a{{b}}c {} {}", &[i(1), s("x")]),
        Ok("a{b}c 1 x".into())
    );
    assert_eq!(fmt("{1}{0}{1}", &[i(1), s("x")]), Ok("x1x".into()));
}

//! TODO: being written.

use super::{Args, Reject};
use crate::config::Limits;

pub fn render(msg: &str, args: Args<'_>, limits: &Limits) -> Result<String, Reject> {
    let _ = (msg, args, limits);
    todo!("dollar")
}

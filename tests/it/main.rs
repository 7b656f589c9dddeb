mod broker;
mod check_cli;
mod consume;
mod consume_memory;
mod differential;
mod fixtures;
mod isolation;
mod properties;

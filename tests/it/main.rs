mod check_cli;
mod consume;
mod differential;
mod fixtures;
mod properties;

mod check_cli;
mod differential;
mod fixtures;
mod properties;

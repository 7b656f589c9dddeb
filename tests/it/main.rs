mod check_cli;
mod differential;
mod fixtures;

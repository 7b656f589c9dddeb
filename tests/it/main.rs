mod differential;
mod fixtures;

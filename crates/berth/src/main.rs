//! `berth`: the command line.

fn main() {}

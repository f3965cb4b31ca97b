//! End-to-end tests: the real `ferry` binary on temporary home folders and "USB sticks".
//!
//! These are the foundation issue's "done means" checks, run exactly as a user would.

mod forge;
mod util;

mod absent;
mod admins;
mod attach;
mod attacks;
mod backup;
mod cli;
mod conflicts;
mod crash;
mod dry_run;
mod email;
mod invitations;
mod matrix;
mod medium;
mod messages;
mod passphrase;
mod progress;
mod rejects;
mod removal;
mod revival;
mod security;
mod serial;
mod serve;
mod sms;
mod spreadsheets;
mod three_laptops;

//! The `memtrack` reader as a library: the commands, and the pieces they
//! share. One state engine (`engine`) is behind every command that consumes
//! records: `record` drains a ring into a record file (`recording`) through
//! a `session`; `report` and `export` read one back; `watch`, `demo` and
//! `serve --consume` run a session live. `status` and `serve` read the
//! writers' live counters without consuming. Every file the commands write
//! goes through `output` (a new file renamed into place, never a ring or
//! the input); every writer-supplied name they print, through
//! `units::printable`.

pub mod attribution;
pub mod bench;
pub mod check;
pub mod columns;
pub mod demo;
pub mod diff;
pub mod engine;
pub mod export;
pub mod filter;
pub mod gc;
pub mod host_pid;
pub mod output;
pub mod record;
pub mod recording;
pub mod report;
pub mod ring_arg;
pub mod serve;
pub mod session;
pub mod signals;
pub mod status;
pub mod units;
pub mod watch;

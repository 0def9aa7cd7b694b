//! The watch fan-out benchmark's parts (`fanout-bench`): many `WatchOrders` streams held open
//! over a few connections while CreateOrder calls are paced at a steady rate, every delivery
//! timed and checked.

pub mod check;
pub mod codec;
pub mod creates;
pub mod pinning;
pub mod watchers;
